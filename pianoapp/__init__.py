"""Pianoapp: piano music across audio, MIDI and text."""

import contextlib
import io

__version__ = "0.1.0"

# pyfluidsynth prints where it found libfluidsynth whenever $CI is set, and pretty_midi imports it
# on import; stdout belongs to `--json`, so the first import happens here, silenced.
with contextlib.redirect_stdout(io.StringIO()):
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        pass  # io.render says what to install when rendering is asked for
