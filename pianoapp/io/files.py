"""Checks every input file goes through before it is decoded: existence, size, kind."""

import os
import threading
from collections.abc import Callable
from pathlib import Path

from pianoapp import constants
from pianoapp.errors import BadInputError, EmptyFileError, TooLargeError, TooLongError, UnsupportedFormatError


def max_upload_bytes() -> int:
    return int(float(os.environ.get("PIANOAPP_MAX_UPLOAD_MB", constants.MAX_UPLOAD_MB)) * 1024 * 1024)


def max_duration_s() -> float:
    return float(os.environ.get("PIANOAPP_MAX_DURATION_S", constants.MAX_DURATION_S))


def check_file(path: str | os.PathLike, *, max_bytes: int | None = None) -> Path:
    """Return the path if it names a non-empty file under the size cap; raise a user-facing error if not."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path.name}: no such file.")
    if not path.is_file():
        raise BadInputError(f"{path.name} is a folder, not a file.")
    size = path.stat().st_size
    if size == 0:
        raise EmptyFileError(f"{path.name} is empty (0 bytes); upload a MIDI, MusicXML or audio file.")
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    if size > limit:
        raise TooLargeError(
            f"{path.name} is {size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit; "
            "trim it or raise PIANOAPP_MAX_UPLOAD_MB."
        )
    return path


def check_duration(name: str, seconds: float, *, max_seconds: float | None = None) -> None:
    limit = max_duration_s() if max_seconds is None else max_seconds
    if seconds > limit:
        raise TooLongError(
            f"{name} lasts {seconds / 60:.1f} min, over the {limit / 60:.0f} min limit; "
            "trim it or raise PIANOAPP_MAX_DURATION_S."
        )


def file_kind(path: str | os.PathLike) -> str:
    """'midi', 'score' (MusicXML and other music21 formats) or 'audio' from the suffix; raises otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in constants.MIDI_SUFFIXES:
        return "midi"
    if suffix in constants.SCORE_SUFFIXES:
        return "score"
    if suffix in constants.AUDIO_SUFFIXES:
        return "audio"
    raise UnsupportedFormatError(
        f"{Path(path).name}: unsupported file type '{suffix or '(none)'}'; use MIDI (.mid), "
        "MusicXML (.xml/.mxl/.musicxml) or audio (.wav/.flac/.ogg/.mp3)."
    )


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write a file through a temporary sibling (`write` fills the path it is given), flushed to
    disk and renamed into place: a reader or a crash sees the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
