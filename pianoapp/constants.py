"""One home for the numbers every part of Pianoapp agrees on."""

from pathlib import Path

# Audio
SAMPLE_RATE = 24_000  # every model and every rendered preview runs at this rate

# Piano
PIANO_PITCH_MIN = 21  # A0
PIANO_PITCH_MAX = 108  # C8
SUSTAIN_CC = 64
SUSTAIN_THRESHOLD = 64  # CC64 value at or above which the pedal counts as down
# A held pedal lengthens a note at most to this: a piano string has decayed to near silence by then,
# and POP909 holds the pedal through whole songs.
SUSTAIN_MAX_RING_S = 10.0

# Input caps (defaults; overridable through environment variables of the same name)
MAX_UPLOAD_MB = 50.0
MAX_DURATION_S = 600.0

# Files
MIDI_SUFFIXES = (".mid", ".midi")
MUSICXML_SUFFIXES = (".xml", ".mxl", ".musicxml")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif", ".webm", ".wma")
# Other score formats music21 reads (its corpus is mostly Humdrum and ABC)
OTHER_SCORE_SUFFIXES = (".krn", ".abc")
SCORE_SUFFIXES = MUSICXML_SUFFIXES + OTHER_SCORE_SUFFIXES
SYMBOLIC_SUFFIXES = MIDI_SUFFIXES + SCORE_SUFFIXES

# Places
REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
ASSETS_DIR = REPO_ROOT / "assets"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
