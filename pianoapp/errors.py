"""The errors a user can see. Each carries one sentence saying what was wrong and what to do.

The CLI prints `str(err)` and exits with `err.exit_code`; the UI shows the same sentence.
Anything that is not a PianoappError is a bug and is reported as one.
"""


class PianoappError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1


class BadInputError(PianoappError):
    """The user's input cannot be used (exit status 2)."""

    exit_code = 2


class EmptyFileError(BadInputError):
    pass


class UnsupportedFormatError(BadInputError):
    pass


class CorruptFileError(BadInputError):
    pass


class TooLargeError(BadInputError):
    pass


class TooLongError(BadInputError):
    pass


class SilentAudioError(BadInputError):
    pass


class EmptyMidiError(BadInputError):
    pass


class MissingBackendError(BadInputError):
    """A system component (soundfont, libfluidsynth, ffmpeg, ONNX model) is missing.

    Exit status 2: the fix is on the user's side (install something), not a bug.
    """


class NotAvailableError(PianoappError):
    """A capability whose model has not been trained or shipped yet."""


def brief(err: BaseException) -> str:
    """First line of a library's exception, trimmed, for use inside a user-facing sentence."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:120]
