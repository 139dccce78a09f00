"""Bad input at the I/O level: each case ends in a PianoappError whose message is one sentence
(what was wrong, what to do), never a traceback. Odd but valid input (8 kHz, six channels) must work."""

import shutil
import subprocess
import sys

import mido
import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from pianoapp import constants
from pianoapp.errors import (
    BadInputError,
    CorruptFileError,
    EmptyFileError,
    EmptyMidiError,
    MissingBackendError,
    PianoappError,
    SilentAudioError,
    TooLargeError,
    TooLongError,
    UnsupportedFormatError,
)
from pianoapp.io.audio import load_audio
from pianoapp.io.midi import notes_to_midi, read_midi, write_midi
from pianoapp.io.render import find_soundfont, render
from pianoapp.io.transcribe import transcribe

SR = constants.SAMPLE_RATE


def one_sentence(err: PianoappError) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text and len(text) < 300, text
    assert text.endswith("."), text
    return text


def midi_bytes(tempo: int = 500_000, notes: bool = True, channel: int = 0) -> mido.MidiFile:
    mf = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mf.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    if notes:
        track.append(mido.Message("note_on", note=60, velocity=80, channel=channel, time=0))
        track.append(mido.Message("note_off", note=60, velocity=0, channel=channel, time=480))
    return mf


def tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# Empty, wrong-kind and damaged files -------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.mid", "empty.wav", "empty.musicxml"])
def test_zero_byte_upload(tmp_path, name):
    path = tmp_path / name
    path.touch()
    loader = load_audio if name.endswith(".wav") else read_midi
    with pytest.raises(EmptyFileError) as err:
        loader(path)
    assert "empty" in one_sentence(err.value)


def test_text_file_renamed_mid(tmp_path):
    path = tmp_path / "notes.mid"
    path.write_text("These are my notes for the concert, not a MIDI file.\n")
    with pytest.raises(CorruptFileError) as err:
        read_midi(path)
    assert "not a MIDI file" in one_sentence(err.value)


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".m4a"])
def test_non_audio_renamed_audio(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(4000))
    with pytest.raises(CorruptFileError) as err:
        load_audio(path)
    one_sentence(err.value)


def test_garbage_musicxml(tmp_path):
    path = tmp_path / "score.musicxml"
    path.write_text("<?xml version='1.0'?><score-partwise><part id='P1'><measure>")
    with pytest.raises(CorruptFileError):
        read_midi(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "song.docx"
    path.write_bytes(b"PK\x03\x04 not really a document")
    with pytest.raises(UnsupportedFormatError) as err:
        read_midi(path)
    assert ".docx" in one_sentence(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadInputError) as err:
        read_midi(tmp_path / "nowhere.mid")
    one_sentence(err.value)
    with pytest.raises(BadInputError) as err:
        load_audio(tmp_path)
    one_sentence(err.value)


def test_truncated_midi(tmp_path, assets_dir):
    data = (assets_dir / "mozart_k545_opening.mid").read_bytes()
    for cut in (14, 30, len(data) // 2, len(data) - 3):
        path = tmp_path / f"cut{cut}.mid"
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptFileError) as err:
            read_midi(path)
        one_sentence(err.value)


def test_bit_flipped_midi_never_crashes(tmp_path, assets_dir):
    """A flipped bit may leave a readable file; then it must also render. Anything else is a clear error."""
    data = (assets_dir / "joplin_maple_leaf_rag_opening.mid").read_bytes()
    outcomes = {"read": 0, "refused": 0}
    for seed in range(25):
        rng = np.random.default_rng(seed)
        flipped = bytearray(data)
        for i in rng.integers(0, len(flipped), 8):
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / f"flip{seed}.mid"
        path.write_bytes(bytes(flipped))
        try:
            pm = read_midi(path)
        except PianoappError as err:
            one_sentence(err)
            outcomes["refused"] += 1
            continue
        audio = render(pm, soundfont="TimGM6mb")
        assert audio.dtype == np.float32 and np.all(np.isfinite(audio))
        outcomes["read"] += 1
    assert outcomes["refused"] > 0


def test_midi_without_notes(tmp_path):
    path = tmp_path / "silent.mid"
    midi_bytes(notes=False).save(path)
    with pytest.raises(EmptyMidiError) as err:
        read_midi(path)
    assert "no notes" in one_sentence(err.value)


def test_midi_with_only_drums(tmp_path):
    path = tmp_path / "drums.mid"
    midi_bytes(channel=9).save(path)
    with pytest.raises(EmptyMidiError) as err:
        read_midi(path)
    assert "drums" in one_sentence(err.value)


def test_midi_with_tempo_zero(tmp_path):
    path = tmp_path / "tempo0.mid"
    midi_bytes(tempo=0).save(path)
    with pytest.raises(CorruptFileError) as err:
        read_midi(path)
    one_sentence(err.value)


# Audio content ----------------------------------------------------------------------------------


def test_silent_recording(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(3 * SR, np.float32), SR)
    with pytest.raises(SilentAudioError) as err:
        load_audio(path)
    assert "silent" in one_sentence(err.value)
    with pytest.raises(SilentAudioError) as err:
        transcribe(np.zeros(3 * SR, np.float32))
    one_sentence(err.value)


def test_very_short_recording_transcribes_to_nothing():
    click = tone(0.002, SR)  # 2 ms: shorter than one frame of the model
    assert transcribe(click).instruments[0].notes == []


def test_nan_audio(tmp_path):
    audio = tone(1.0, SR)
    audio[1000:1010] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    with pytest.raises(CorruptFileError) as err:
        load_audio(path)
    assert "NaN" in one_sentence(err.value)


# Caps: size and duration, checked before decoding ------------------------------------------------


def test_two_hour_recording_refused_before_decoding(tmp_path, monkeypatch):
    """A real two-hour WAV, kept small by a 100 Hz sample rate; decoding it would fail the test."""
    path = tmp_path / "two_hours.wav"
    sf.write(path, np.zeros(2 * 3600 * 100, np.int16), 100)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the duration cap must be enforced before decoding")

    monkeypatch.setattr(sf, "read", no_decoding)
    with pytest.raises(TooLongError) as err:
        load_audio(path)
    assert "120.0 min" in one_sentence(err.value)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_two_hour_mp3_refused(tmp_path):
    path = tmp_path / "two_hours.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "7200",
                    "-c:a", "libmp3lame", "-b:a", "8k", str(path)], check=True)
    with pytest.raises(TooLongError):
        load_audio(path)


def test_duration_cap_from_environment(tmp_path, monkeypatch, assets_dir):
    monkeypatch.setenv("PIANOAPP_MAX_DURATION_S", "5")
    with pytest.raises(TooLongError) as err:
        load_audio(assets_dir / "mozart_k545_opening.flac")
    assert "PIANOAPP_MAX_DURATION_S" in one_sentence(err.value)
    with pytest.raises(TooLongError):
        read_midi(assets_dir / "mozart_k545_opening.mid")


def test_size_cap_from_environment(monkeypatch, assets_dir):
    monkeypatch.setenv("PIANOAPP_MAX_UPLOAD_MB", "0.01")  # 10 KB
    with pytest.raises(TooLargeError) as err:
        load_audio(assets_dir / "mozart_k545_opening.flac")
    assert "PIANOAPP_MAX_UPLOAD_MB" in one_sentence(err.value)
    assert read_midi(assets_dir / "mozart_k545_opening.mid")  # 1 KB passes


# Odd but valid recordings ------------------------------------------------------------------------


@pytest.mark.parametrize("sr, channels", [(8000, 1), (48000, 6), (44100, 2), (22050, 1)])
def test_any_rate_and_channel_count_loads_as_mono_24k(tmp_path, sr, channels):
    mono = tone(2.0, sr)
    path = tmp_path / f"tone_{sr}_{channels}.wav"
    sf.write(path, np.repeat(mono[:, None], channels, axis=1), sr)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 2 * SR) <= SR // 100
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SR / audio.size - 440.0) < 2.0  # the pitch survives resampling
    assert 0.25 < np.abs(audio).max() < 0.35  # downmix averages channels, keeping the level


# Missing system components ----------------------------------------------------------------------


def test_soundfont_env_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("PIANOAPP_SOUNDFONT", str(tmp_path / "missing.sf2"))
    with pytest.raises(MissingBackendError) as err:
        render(notes_to_midi([pretty_midi.Note(80, 60, 0.0, 0.5)]))
    assert "PIANOAPP_SOUNDFONT" in one_sentence(err.value)


def test_damaged_soundfont(tmp_path):
    path = tmp_path / "damaged.sf2"
    path.write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + bytes(200))
    with pytest.raises(MissingBackendError) as err:
        render(notes_to_midi([pretty_midi.Note(80, 60, 0.0, 0.5)]), soundfont=str(path))
    one_sentence(err.value)


def test_unknown_soundfont_name():
    with pytest.raises(MissingBackendError) as err:
        find_soundfont("Steinway_Imaginary")
    assert "FluidR3_GM" in one_sentence(err.value)  # the message lists what is installed


@pytest.mark.parametrize("module, call", [
    ("fluidsynth", "from pianoapp.io.render import render; render(read_midi(PATH))"),
    ("onnxruntime", "from pianoapp.io.transcribe import transcribe; transcribe(np.sin(np.arange(24000) / 5))"),
])
def test_missing_library(tmp_path, assets_dir, module, call):
    """libfluidsynth or onnxruntime absent: simulated by making its import fail in a fresh interpreter."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "import numpy as np\n"
        "from pianoapp.errors import PianoappError\n"
        "from pianoapp.io.midi import read_midi\n"
        f"PATH = {str(assets_dir / 'pedal_arpeggios.mid')!r}\n"
        "try:\n"
        f"    {call}\n"
        "except PianoappError as err:\n"
        "    print(type(err).__name__, err.exit_code, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    kind, code_, message = out.stdout.strip().split(" ", 2)
    assert kind == "MissingBackendError" and code_ == "2"
    assert "install" in message and message.endswith(".")


def test_written_midi_of_bad_input_is_never_produced(tmp_path):
    """write_midi is atomic: a failed write leaves no half file behind."""
    pm = notes_to_midi([pretty_midi.Note(80, 60, 0.0, 0.5)])
    pm.instruments[0].notes[0].pitch = 300  # not representable in MIDI
    with pytest.raises(ValueError):
        write_midi(pm, tmp_path / "out.mid")
    assert list(tmp_path.iterdir()) == []
