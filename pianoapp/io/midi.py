"""MIDI and MusicXML in, MIDI out. Everything symbolic becomes a validated `pretty_midi.PrettyMIDI`.

`piano_notes` is the one place that turns a file's tracks into a single piano part: drums dropped,
every program treated as piano, the sustain pedal folded into note lengths.
"""

import io
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pretty_midi

from pianoapp import constants
from pianoapp.errors import CorruptFileError, EmptyMidiError, TooLargeError, brief
from pianoapp.io.files import check_duration, check_file, file_kind

MIDI_MAGIC = b"MThd"
# The longest performance in the training data (a 29-minute Liszt sonata) has 16.5k notes in 280 KB.
# Beyond these a file is not piano music, and reading it (4 s per MB) or showing it costs too much.
MAX_NOTES = 30_000
MAX_MIDI_BYTES = 2**20


def read_midi(
    path: str | os.PathLike, *, max_bytes: int | None = None, max_seconds: float | None = None
) -> pretty_midi.PrettyMIDI:
    """Read a MIDI or MusicXML file, validated: not empty, not corrupt, has piano-playable notes.

    `max_seconds=float('inf')` turns the duration cap off (for corpora); `None` uses the default cap.
    """
    path = check_file(path, max_bytes=max_bytes)
    kind = file_kind(path)
    if kind == "audio":
        raise CorruptFileError(f"{path.name} is audio, not a score; use it where recordings are accepted.")
    pm = _read_score(path) if kind == "score" else _read_midi_file(path)
    validate(pm, path.name, max_seconds=max_seconds)
    return pm


def _read_midi_file(path: Path) -> pretty_midi.PrettyMIDI:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != MIDI_MAGIC:
        raise CorruptFileError(f"{path.name} is not a MIDI file (its header is not 'MThd').")
    size = path.stat().st_size
    if size > MAX_MIDI_BYTES:
        raise TooLargeError(f"{path.name} is {size / 2**20:.1f} MB, more than a piano MIDI file needs "
                            f"(at most {MAX_MIDI_BYTES / 2**20:.0f} MB); it holds something other than piano music.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns on harmless oddities (type-0 tempo events)
            return pretty_midi.PrettyMIDI(str(path))
    except ZeroDivisionError as err:
        raise CorruptFileError(f"{path.name} has a tempo of zero, which no player can follow.") from err
    except Exception as err:  # mido raises many types for malformed files
        raise CorruptFileError(f"{path.name} is a damaged MIDI file and cannot be read ({brief(err)}).") from err


SCORE_TICKS_PER_QUARTER = 480  # music21's 10,080 pushes scores past ~990 quarters over pretty_midi's tick cap
ABC_TUNE = re.compile(rb"^X:\s*(\d+)", re.MULTILINE)
# Scores are checked before music21 sees them. Its reading and MIDI conversion grow with the square of
# the notes (8,000 in one part: 19 s, 20,000: 110 s on a loaded 2-core machine), and an .mxl is a zip
# that may inflate to gigabytes. The demo's largest score (Beethoven op. 59 no. 2/i, 12,356 notes and
# rests, 4.8 MB of XML) is read in about a minute; the largest in music21's corpus is 10.4 MB.
MAX_SCORE_NOTES = 15_000  # <note> elements: notes, chord notes and rests
MAX_SCORE_BYTES = 16 * 2**20  # score text, inflated for .mxl
NOTE_ELEMENT = re.compile(rb"<note[\s>]")


def parse_score(path: Path):
    """The music21 score of a MusicXML, ABC or Humdrum file (an ABC book's or an opus's first),
    refused before parsing when it holds more than a piano score does."""
    import music21  # slow import, only when a score arrives

    _check_score_size(path)
    try:
        options = {}
        if path.suffix.lower() == ".abc":  # ABC books hold many tunes: parse only the first
            first = ABC_TUNE.search(path.read_bytes())
            options = {"number": int(first.group(1))} if first else {}
        score = music21.converter.parse(str(path), **options)
        if isinstance(score, music21.stream.Opus):
            score = score.scores[0] if score.scores else score
    except Exception as err:  # music21 raises many types for malformed scores
        raise CorruptFileError(f"{path.name} is not a readable score ({brief(err)}).") from err
    return score


def _check_score_size(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".mxl":
        try:  # sizes as the archive declares them: Python's zipfile never inflates an entry past its own
            with zipfile.ZipFile(path) as archive:
                entries = [e for e in archive.infolist() if not e.filename.startswith("META-INF/")]
                _check_score_bytes(path, sum(e.file_size for e in entries))
                text = b"".join(archive.read(e) for e in entries)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as err:
            raise CorruptFileError(f"{path.name} is not a readable score ({brief(err)}).") from err
    else:
        _check_score_bytes(path, path.stat().st_size)
        text = path.read_bytes() if suffix in constants.MUSICXML_SUFFIXES else b""  # ABC, Humdrum: size only
    if text.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16, as some of music21's own corpus is
        text = text.decode("utf-16", errors="replace").encode()
    notes = len(NOTE_ELEMENT.findall(text))
    if notes > MAX_SCORE_NOTES:
        raise TooLargeError(f"{path.name} has {notes:,} notes and rests, more than the {MAX_SCORE_NOTES:,} a score "
                            f"may have here; export it as MIDI instead (up to {MAX_NOTES:,} notes).")


def _check_score_bytes(path: Path, size: int) -> None:
    if size > MAX_SCORE_BYTES:
        raise TooLargeError(f"{path.name} holds {size / 2**20:.0f} MB of score text, more than the "
                            f"{MAX_SCORE_BYTES / 2**20:.0f} MB a piano score needs; export it as MIDI instead.")


def _read_score(path: Path) -> pretty_midi.PrettyMIDI:
    import music21

    music21.defaults.ticksPerQuarter = SCORE_TICKS_PER_QUARTER
    score = parse_score(path)
    try:
        data = music21.midi.translate.music21ObjectToMidiFile(score).writestr()
    except Exception as err:  # music21 raises many types for malformed scores
        raise CorruptFileError(f"{path.name} is not a readable score ({brief(err)}).") from err
    try:
        return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as err:
        raise CorruptFileError(f"{path.name} could not be converted to MIDI ({brief(err)}).") from err


def validate(pm: pretty_midi.PrettyMIDI, name: str, *, max_seconds: float | None = None) -> None:
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        drums = any(inst.is_drum and inst.notes for inst in pm.instruments)
        detail = "only drums" if drums else "no notes"
        raise EmptyMidiError(f"{name} has {detail}; there is nothing a piano could play.")
    if len(notes) > MAX_NOTES:
        raise CorruptFileError(f"{name} has {len(notes):,} notes, more than the {MAX_NOTES:,} we accept.")
    end = max(n.end for n in notes)
    if not np.isfinite(end):
        raise CorruptFileError(f"{name} has notes at impossible times (a broken tempo map).")
    check_duration(name, end, max_seconds=max_seconds)


def sustain_intervals(inst: pretty_midi.Instrument, end_time: float) -> list[tuple[float, float]]:
    """(down, up) times of the sustain pedal in one track."""
    intervals, down_at = [], None
    for cc in sorted(inst.control_changes, key=lambda c: c.time):
        if cc.number != constants.SUSTAIN_CC:
            continue
        down = cc.value >= constants.SUSTAIN_THRESHOLD
        if down and down_at is None:
            down_at = cc.time
        elif not down and down_at is not None:
            intervals.append((down_at, cc.time))
            down_at = None
    if down_at is not None:
        intervals.append((down_at, max(end_time, down_at)))
    return intervals


def fold_sustain(notes: list[pretty_midi.Note], pedal: list[tuple[float, float]]) -> list[pretty_midi.Note]:
    """Lengthen each note released while the pedal is down to the pedal release, as a piano sounds it.

    A note is cut where the same key is struck again, since the new strike damps the old string, and
    rings at most `SUSTAIN_MAX_RING_S` from its onset.
    """
    if not pedal:
        return [pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in notes]
    downs = np.array([d for d, _ in pedal])
    ups = np.array([u for _, u in pedal])
    out = []
    for n in notes:
        end = n.end
        i = np.searchsorted(downs, n.end, side="right") - 1
        if i >= 0 and downs[i] <= n.end < ups[i]:
            end = max(n.end, min(ups[i], n.start + constants.SUSTAIN_MAX_RING_S))
        out.append(pretty_midi.Note(n.velocity, n.pitch, n.start, end))
    # Re-strikes damp: cut a lengthened note at the next onset of the same pitch.
    by_pitch: dict[int, list[pretty_midi.Note]] = {}
    for n in sorted(out, key=lambda n: (n.start, n.pitch)):
        by_pitch.setdefault(n.pitch, []).append(n)
    for same in by_pitch.values():
        for a, b in zip(same, same[1:]):
            if a.end > b.start:
                a.end = max(b.start, a.start)
    return out


def piano_notes(pm: pretty_midi.PrettyMIDI, *, fold_pedal: bool = True) -> list[pretty_midi.Note]:
    """All non-drum notes of every track as one piano part, sorted by (start, pitch), pedal folded in.

    Pitches outside the piano's 88 keys are moved by octaves into range.
    """
    end_time = pm.get_end_time()
    notes: list[pretty_midi.Note] = []
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        pedal = sustain_intervals(inst, end_time) if fold_pedal else []
        notes.extend(fold_sustain(inst.notes, pedal))
    for n in notes:
        n.pitch = fold_into_piano_range(n.pitch)
        n.end = max(n.end, n.start)
    notes.sort(key=lambda n: (n.start, n.pitch, n.end))
    return notes


def fold_into_piano_range(pitch: int) -> int:
    while pitch < constants.PIANO_PITCH_MIN:
        pitch += 12
    while pitch > constants.PIANO_PITCH_MAX:
        pitch -= 12
    return pitch


def notes_to_midi(
    tracks: dict[str, list[pretty_midi.Note]] | list[pretty_midi.Note], *, tempo: float = 120.0
) -> pretty_midi.PrettyMIDI:
    """A piano MIDI from notes; a dict gives one named piano track per entry (e.g. melody, accompaniment)."""
    if not isinstance(tracks, dict):
        tracks = {"Piano": tracks}
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    for name, notes in tracks.items():
        inst = pretty_midi.Instrument(program=0, name=name)
        inst.notes = [pretty_midi.Note(int(n.velocity), int(n.pitch), float(n.start), float(n.end)) for n in notes]
        pm.instruments.append(inst)
    return pm


def write_midi(pm: pretty_midi.PrettyMIDI, path: str | os.PathLike) -> Path:
    """Write atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mid", dir=path.parent)
    os.close(fd)
    try:
        pm.write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a written MIDI is for sharing
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
