"""Any audio file → mono float32 at `constants.SAMPLE_RATE`, validated before and after decoding."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from pianoapp import constants
from pianoapp.errors import CorruptFileError, MissingBackendError, SilentAudioError, brief
from pianoapp.io.files import check_duration, check_file, max_duration_s

SILENCE_DBFS = -60.0  # a recording whose loudest 100 ms stays below this is treated as silence


def load_audio(
    path: str | os.PathLike,
    *,
    sr: int = constants.SAMPLE_RATE,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    allow_silence: bool = False,
) -> np.ndarray:
    """Decode, downmix, resample. Duration is checked from the header before decoding when possible."""
    path = check_file(path, max_bytes=max_bytes)
    limit = max_duration_s() if max_seconds is None else max_seconds
    audio, file_sr = _decode_soundfile(path, limit)
    if audio is None:
        audio, file_sr = _decode_ffmpeg(path, limit, sr)
    if audio.size == 0:
        raise CorruptFileError(f"{path.name} contains no audio samples.")
    if not np.all(np.isfinite(audio)):
        raise CorruptFileError(f"{path.name} contains invalid samples (NaN or infinity).")
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # float files may go past full scale (even to 1e38, which overflows every analysis)
        audio = audio / peak
    if file_sr != sr:
        import librosa

        audio = librosa.resample(audio, orig_sr=file_sr, target_sr=sr)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not allow_silence and is_silent(audio, sr):
        raise SilentAudioError(f"{path.name} is silent (quieter than {SILENCE_DBFS:.0f} dBFS throughout).")
    return audio


def _decode_soundfile(path: Path, limit: float) -> tuple[np.ndarray | None, int]:
    import soundfile as sf

    if path.suffix.lower() == ".mp3" and shutil.which("ffmpeg"):
        return None, 0  # libsndfile's MP3 decoder (mpg123) prints every damaged frame on stderr
    try:
        info = sf.info(str(path))
    except Exception:  # not a format libsndfile knows: fall back to ffmpeg
        return None, 0
    if info.samplerate <= 0:
        raise CorruptFileError(f"{path.name} declares an impossible sample rate ({info.samplerate} Hz).")
    check_duration(path.name, info.frames / info.samplerate, max_seconds=limit)
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise CorruptFileError(f"{path.name} is damaged and cannot be decoded ({brief(err)}).") from err
    return data.mean(axis=1), file_sr


def _decode_ffmpeg(path: Path, limit: float, sr: int) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MissingBackendError(
            f"{path.name} needs ffmpeg to decode and it is not installed; run `apt-get install -y ffmpeg` "
            "or convert the file to WAV/FLAC."
        )
    seconds = _probe_seconds(path)
    if seconds is not None:
        check_duration(path.name, seconds, max_seconds=limit)
    # -t caps decoding even when the container lies about (or omits) its duration.
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-t", str(limit + 1), "-f", "f32le",
           "-ac", "1", "-ar", str(sr), "pipe:1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired as err:
        raise CorruptFileError(f"{path.name} took too long to decode; convert it to WAV and retry.") from err
    if proc.returncode != 0 or not proc.stdout:
        raise CorruptFileError(f"{path.name} is not an audio file we can decode.")
    audio = np.frombuffer(proc.stdout, dtype=np.float32).copy()
    check_duration(path.name, audio.size / sr, max_seconds=limit)
    return audio, sr


def _probe_seconds(path: Path) -> float | None:
    """The duration the container declares; None when it declares none (or ffprobe is missing).
    A file ffprobe cannot open is refused here: ffmpeg would fail on it too, one process later."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    cmd = [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise CorruptFileError(f"{path.name} is not an audio file we can decode.")
    try:
        return float(proc.stdout.strip())
    except ValueError:
        return None


def is_silent(audio: np.ndarray, sr: int) -> bool:
    frame = max(1, sr // 10)
    n = max(1, audio.size // frame)
    frames = audio[: n * frame].reshape(n, -1) if audio.size >= frame else audio[None, :]
    loudest = float(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).max())
    return 20 * np.log10(loudest + 1e-12) < SILENCE_DBFS


def write_audio(path: str | os.PathLike, audio: np.ndarray, sr: int = constants.SAMPLE_RATE) -> Path:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr)
    return path
