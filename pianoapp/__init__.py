"""Pianoapp: piano music across audio, MIDI and text."""

__version__ = "0.1.0"
