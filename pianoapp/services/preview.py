"""See and hear any file a user brings: scores and MIDI are rendered and drawn as a piano roll,
recordings play back with their spectrogram.

Previews are cached by file content, so the same upload (or the same demo item) is rendered once.
The cache is bounded by the audio it holds; an evicted preview's WAV file is deleted with it.
"""

import atexit
import functools
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pretty_midi

from pianoapp import constants, pianoroll
from pianoapp.io.audio import load_audio, write_audio
from pianoapp.io.files import check_file, file_kind
from pianoapp.io.midi import piano_notes, read_midi, sustain_intervals, write_midi
from pianoapp.io.render import render

CACHE_AUDIO_BYTES = 256 * 2**20  # about 45 minutes of preview audio held in memory


@dataclass(frozen=True)
class Preview:
    kind: str  # "midi" for anything symbolic (MIDI, MusicXML, other scores), "audio" for recordings
    audio: tuple[int, np.ndarray]  # (sample rate, mono float32), as gr.Audio takes it
    wav_path: Path  # the same audio as a WAV file, so the browser gets a plain <audio> element
    figure: go.Figure  # piano roll for symbolic input, spectrogram for audio
    summary: str  # one line: duration, notes and pitch range, or sample rate


_cache: OrderedDict[str, Preview] = OrderedDict()
_lock = threading.Lock()


def preview_file(path: str | os.PathLike) -> Preview:
    """Preview a MIDI, MusicXML or audio file; raises a PianoappError with a user-facing sentence."""
    path = check_file(path)
    kind = file_kind(path)
    key = _content_key(path)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    preview = _preview_audio(path, key) if kind == "audio" else _preview_symbolic(path, key)
    with _lock:
        _cache[key] = preview
        while len(_cache) > 1 and sum(p.audio[1].nbytes for p in _cache.values()) > CACHE_AUDIO_BYTES:
            _, evicted = _cache.popitem(last=False)
            evicted.wav_path.unlink(missing_ok=True)
    return preview


def _content_key(path: Path) -> str:
    # The suffix is part of the key: the same bytes named .mid and .xml are read differently.
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32] + path.suffix.lower()


def _preview_symbolic(path: Path, key: str) -> Preview:
    pm = read_midi(path)
    audio = render(pm, sr=constants.SAMPLE_RATE)
    notes = piano_notes(pm)
    low, high = min(n.pitch for n in notes), max(n.pitch for n in notes)
    pedal = any(sustain_intervals(inst, pm.get_end_time()) for inst in pm.instruments if not inst.is_drum)
    summary = (
        f"{clock(max(n.end for n in notes))} · {len(notes):,} notes · "
        f"{pianoroll.note_name(low)}–{pianoroll.note_name(high)}" + (" · sustain pedal" if pedal else "")
    )
    figure = pianoroll.piano_roll(pm)
    return Preview("midi", (constants.SAMPLE_RATE, audio), _write_wav(audio, key), figure, summary)


def _preview_audio(path: Path, key: str) -> Preview:
    audio = load_audio(path, sr=constants.SAMPLE_RATE)
    seconds = audio.size / constants.SAMPLE_RATE
    summary = f"{clock(seconds)} · mono at {constants.SAMPLE_RATE / 1000:g} kHz"
    figure = pianoroll.spectrogram(audio, constants.SAMPLE_RATE)
    return Preview("audio", (constants.SAMPLE_RATE, audio), _write_wav(audio, key), figure, summary)


@functools.cache
def scratch_dir(purpose: str) -> Path:
    """One folder per process and purpose ("previews", "continuations"), removed at exit, so
    processes never delete each other's files."""
    folder = Path(tempfile.mkdtemp(prefix=f"pianoapp-{purpose}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


KEEP_SAVED = 32  # saved results kept on disk; the app serves its own copies, so older ones can go


@dataclass(frozen=True)
class Saved:
    """A result ready to hand out: audio to play and MIDI to download."""

    wav_path: Path
    midi_path: Path


def save_result(pm: pretty_midi.PrettyMIDI, purpose: str, name: str) -> Saved:
    """Render `pm` to `<name>.wav` and write `<name>.mid`, in a fresh folder of the `purpose` scratch
    folder (continuations, arrangements), keeping the newest KEEP_SAVED there."""
    folder = Path(tempfile.mkdtemp(dir=scratch_dir(purpose)))
    wav = write_audio(folder / f"{name}.wav", render(pm, sr=constants.SAMPLE_RATE), constants.SAMPLE_RATE)
    mid = write_midi(pm, folder / f"{name}.mid")
    for old in sorted(scratch_dir(purpose).iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP_SAVED]:
        shutil.rmtree(old, ignore_errors=True)
    return Saved(wav, mid)


def _write_wav(audio: np.ndarray, key: str) -> Path:
    path = scratch_dir("previews") / f"{key.replace('.', '-')}.wav"
    # Written beside and renamed, so a concurrent request never serves half a file.
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp.wav")
    write_audio(tmp, audio, constants.SAMPLE_RATE)
    os.replace(tmp, path)
    return path


def clock(seconds: float) -> str:
    """'m:ss' for summaries."""
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"
