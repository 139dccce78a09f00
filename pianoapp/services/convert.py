"""Whole-file conversions the CLI exposes directly: MIDI/score → audio, audio → MIDI."""

from pathlib import Path

from pianoapp.errors import BadInputError, EmptyMidiError
from pianoapp.io.audio import load_audio, write_audio
from pianoapp.io.files import file_kind
from pianoapp.io.midi import read_midi, write_midi
from pianoapp.io.render import render
from pianoapp.io.transcribe import transcribe


def render_file(path: str | Path, out: str | Path, *, soundfont: str | None = None) -> Path:
    """Render a MIDI or score file to a WAV/FLAC/OGG file (format from `out`'s suffix)."""
    if file_kind(path) == "audio":
        raise BadInputError(f"{Path(path).name} is already audio; render takes a MIDI or score file.")
    return write_audio(out, render(read_midi(path), soundfont=soundfont))


def transcribe_file(path: str | Path, out: str | Path) -> Path:
    """Transcribe a recording to a piano MIDI file."""
    if file_kind(path) != "audio":
        raise BadInputError(f"{Path(path).name} is not a recording; transcribe takes an audio file.")
    pm = transcribe(load_audio(path))
    if not any(inst.notes for inst in pm.instruments):  # noise, a click: say so rather than write an empty file
        raise EmptyMidiError(f"No piano notes were found in {Path(path).name}; transcribe takes a recording of piano music.")
    return write_midi(pm, out)
