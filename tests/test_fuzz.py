"""Fuzzed bad input through every entry point: the service layer in worker processes, and the CLI.

A seeded generator writes 242 bad files (BAD_FILES): truncated and bit-flipped MIDI, audio and
MusicXML, zero-byte files, headers declaring absurd sizes, wrong extensions, 1 ms and 2 h recordings,
NaN samples, 100k notes, tempo 0, drums only, garbage and oversized scores. Each goes through every
service entry point (preview, match.read_query and match.match on a small index, continue,
library.add_uploads, render, transcribe, and the arrange/explore input readers) in worker processes
that hold the models, each call capped in time (CALL_CAP_S) and the worker in memory (MEMORY_CAP);
of the damaged copies of one source, only the mildest also go through the doors that run models
(`read_only_copies`). A call must return a valid result or raise a PianoappError whose message is
one sentence; anything else names the input. A sample of every kind also goes through the command
line, by `cli.main` in the workers and, one input per command, the real `pianoapp` script: exit
status 0 or 2, one line on stderr, no traceback. The counts go to test-artifacts/fuzz-summary.json.
"""

import contextlib
import fcntl
import io
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_bad_input import one_sentence
from test_browser import ARTIFACTS
from test_cli import PIANOAPP, assert_one_line_error

from pianoapp import constants
from pianoapp.errors import NotAvailableError, PianoappError, TooLargeError
from pianoapp.io.midi import MAX_SCORE_NOTES

SEED = 9
BAD_FILES = 242  # how many `make_corpus` writes: the number the issue note quotes
SR = constants.SAMPLE_RATE
CALL_CAP_S = 20  # one entry point on one input; generous for a loaded 2-core machine
MEMORY_CAP = 6 * 2**30  # address space of a worker: 2.5 GB are mapped once the models are loaded, 5 at most in a run
WORKERS = 2
ASSETS = constants.ASSETS_DIR
INDEXED_ASSETS = ("mozart_k545_opening.mid", "bach_chorale_bwv66.6.mid", "joplin_maple_leaf_rag_opening.flac")


# The bad files ----------------------------------------------------------------------------------


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _smf(tracks: list[bytes], *, fmt: int = 1, division: int = 480, ntracks: int | None = None,
         header_len: int = 6, track_len: int | None = None) -> bytes:
    """A Standard MIDI File from raw track event bytes, with every header field under our control."""
    head = b"MThd" + struct.pack(">IHHH", header_len, fmt, len(tracks) if ntracks is None else ntracks, division)
    body = b"".join(b"MTrk" + struct.pack(">I", len(t) if track_len is None else track_len) + t for t in tracks)
    return head + body


END_OF_TRACK = b"\x00\xff\x2f\x00"


def _notes(pitches, *, channel: int = 0, length: int = 240, gap: int = 0, velocity: int = 80) -> bytes:
    events = b""
    for p in pitches:
        events += _vlq(gap) + bytes([0x90 | channel, p, velocity]) + _vlq(length) + bytes([0x80 | channel, p, 0])
    return events


def _tempo(us_per_beat: int) -> bytes:
    return b"\x00\xff\x51\x03" + us_per_beat.to_bytes(3, "big")


def _wav_header(*, rate: int, channels: int, bits: int, data_bytes: int, fmt_tag: int = 1,
                riff_bytes: int | None = None) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    riff = 4 + 8 + len(fmt) + 8 + data_bytes if riff_bytes is None else riff_bytes
    return (b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


def _melody(seconds: float) -> np.ndarray:
    """A few decaying piano-like notes: something a transcriber finds notes in."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    for i, midi in enumerate([60, 64, 67, 72, 67, 64] * int(seconds + 1)):
        start = i * 0.4
        if start >= seconds:
            break
        f = 440 * 2 ** ((midi - 69) / 12)
        env = np.where(t >= start, np.exp(-(t - start) * 3), 0)
        out += env * sum(np.sin(2 * np.pi * k * f * (t - start)) / k for k in (1, 2, 3))
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 3.1 Partwise//EN" "http://www.musicxml.org/dtds/partwise.dtd">
<score-partwise version="3.1"><part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>
<part id="P1"><measure number="1"><attributes><divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type>
</time><clef><sign>G</sign><line>2</line></clef></attributes>{notes}</measure></part></score-partwise>
"""
XML_NOTE = "<note><pitch><step>{step}</step><octave>{octave}</octave></pitch><duration>{duration}</duration></note>"


def _musicxml(notes=(("C", 4, 1), ("E", 4, 1), ("G", 4, 1), ("C", 5, 1)), *, divisions: str = "1") -> str:
    body = "".join(XML_NOTE.format(step=s, octave=o, duration=d) for s, o, d in notes)
    return MUSICXML.format(notes=body).replace("<divisions>1</divisions>", f"<divisions>{divisions}</divisions>")


def _truncations(data: bytes) -> list[bytes]:
    return [data[:n] for n in sorted({4, 14, 40, len(data) // 3, len(data) // 2, len(data) - 9}) if 0 < n < len(data)]


def _flips(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    out = []
    for bits in [1, 8, 64, 512][:count] + [8] * max(0, count - 4):
        flipped = bytearray(data)
        for i in rng.integers(0, len(data), bits):
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        out.append(bytes(flipped))
    return out


def make_corpus(folder: Path) -> tuple[list[Path], list[Path]]:
    """(bad files, controls): the controls are the undamaged sources, which must give valid results."""
    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def put(name: str, data: bytes | str) -> Path:
        path = folder / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        files.append(path)
        return path

    controls = folder / "controls"
    controls.mkdir()
    wav = _melody(5.0)
    sf.write(controls / "melody.wav", wav, SR, subtype="PCM_16")
    sf.write(controls / "melody.ogg", wav, SR)
    sf.write(controls / "melody.mp3", wav, SR)
    (controls / "score.musicxml").write_text(_musicxml())
    shutil.copy(ASSETS / "mozart_k545_opening.flac", controls)
    midis = sorted(ASSETS.glob("*.mid"))
    for p in midis:
        shutil.copy(p, controls)
    control_files = sorted(controls.iterdir())

    # Truncated and bit-flipped copies of every kind: (truncations, flips) per source. A damaged
    # recording mostly still decodes and then goes through every model, so those get fewer copies.
    copies = {**{p: (6, 6) for p in midis}, controls / "melody.wav": (4, 2), controls / "melody.ogg": (4, 1),
              controls / "melody.mp3": (4, 2), controls / "mozart_k545_opening.flac": (6, 4),
              controls / "score.musicxml": (6, 4)}
    for src, (cuts, flips) in copies.items():
        data, stem, suffix = src.read_bytes(), src.stem[:12], src.suffix
        for i, cut in enumerate(_truncations(data)[:cuts]):
            put(f"trunc{i}-{stem}{suffix}", cut)
        for i, flipped in enumerate(_flips(data, rng, flips)):
            put(f"flip{i}-{stem}{suffix}", flipped)

    # Zero bytes, random bytes and text under every suffix, and unknown suffixes.
    for suffix in (".mid", ".midi", ".wav", ".flac", ".mp3", ".ogg", ".m4a", ".xml", ".musicxml", ".mxl", ".abc",
                   ".krn"):
        put(f"empty{suffix}", b"")
        put(f"random{suffix}", rng.bytes(int(rng.integers(16, 6000))))
        put(f"text{suffix}", "These are my notes for Thursday's lesson, not music.\n" * 20)
    for name in ("noextension", "song.txt", "song.pdf", "song.mid.exe"):
        put(name, rng.bytes(500))

    # Wrong extensions: each kind's bytes under another kind's name.
    mozart_mid = (ASSETS / "mozart_k545_opening.mid").read_bytes()
    flac = (ASSETS / "mozart_k545_opening.flac").read_bytes()
    for suffix in (".wav", ".flac", ".mp3", ".m4a", ".xml", ".musicxml", ".mxl", ".abc"):
        put(f"midi-as{suffix}", mozart_mid)
    for suffix in (".mid", ".xml", ".musicxml"):
        put(f"flac-as{suffix}", flac)
    for suffix in (".mid", ".flac", ".m4a", ".abc"):
        put(f"wav-as{suffix}", (controls / "melody.wav").read_bytes())
        put(f"musicxml-as{suffix}", _musicxml())

    # Headers that declare absurd sizes.
    one_note = _notes([60]) + END_OF_TRACK
    put("hdr-65535-tracks.mid", _smf([one_note], ntracks=65535))
    put("hdr-0-tracks.mid", _smf([], ntracks=0))
    put("hdr-track-4gb.mid", _smf([one_note], track_len=0xFFFFFFFF))
    put("hdr-header-4gb.mid", _smf([one_note], header_len=0xFFFFFFFF))
    put("hdr-division-0.mid", _smf([one_note], division=0))
    put("hdr-smpte-division.mid", _smf([one_note], division=0xE728))
    put("hdr-format-7.mid", _smf([one_note], fmt=7))
    put("hdr-delta-max.mid", _smf([_vlq(0x0FFFFFFF) + _notes([60])[1:] + END_OF_TRACK]))
    put("hdr-vlq-endless.mid", _smf([b"\xff" * 64 + END_OF_TRACK]))
    put("hdr-meta-4gb.mid", _smf([b"\x00\xff\x01\x8f\xff\xff\xff\x7f" + b"x" * 20 + one_note]))
    body = (wav * 32767).astype("<i2").tobytes()
    put("hdr-hours.wav", _wav_header(rate=SR, channels=1, bits=16, data_bytes=0xFFFFFFF0) + body)
    put("hdr-rate-0.wav", _wav_header(rate=0, channels=1, bits=16, data_bytes=len(body)) + body)
    put("hdr-rate-4g.wav", _wav_header(rate=0xFFFFFFFF, channels=1, bits=16, data_bytes=len(body)) + body)
    put("hdr-channels-0.wav", _wav_header(rate=SR, channels=0, bits=16, data_bytes=len(body)) + body)
    put("hdr-channels-65535.wav", _wav_header(rate=SR, channels=65535, bits=16, data_bytes=len(body)) + body)
    put("hdr-bits-0.wav", _wav_header(rate=SR, channels=1, bits=0, data_bytes=len(body)) + body)
    put("hdr-bits-7.wav", _wav_header(rate=SR, channels=1, bits=7, data_bytes=len(body)) + body)
    put("hdr-format-mp3.wav", _wav_header(rate=SR, channels=1, bits=16, data_bytes=len(body), fmt_tag=0x55) + body)
    put("hdr-riff-tiny.wav", _wav_header(rate=SR, channels=1, bits=16, data_bytes=len(body), riff_bytes=4) + body)

    # Durations: 1 ms, one sample, no samples, two hours (sparse: over the size cap; at 100 Hz: under it).
    sf.write(folder / "one-ms.wav", wav[: SR // 1000], SR)
    sf.write(folder / "one-sample.wav", wav[:1], SR)
    sf.write(folder / "one-ms.flac", wav[: SR // 1000], SR)
    files += [folder / "one-ms.wav", folder / "one-sample.wav", folder / "one-ms.flac"]
    put("no-samples.wav", _wav_header(rate=SR, channels=1, bits=16, data_bytes=0))
    hours = 2 * 3600 * SR * 2
    with open(put("two-hours-sparse.wav", _wav_header(rate=SR, channels=1, bits=16, data_bytes=hours)), "r+b") as f:
        f.truncate(44 + hours)  # a hole: 345 MB on paper, nothing on disk
    sf.write(folder / "two-hours-100hz.wav", np.zeros(2 * 3600 * 100, np.int16), 100, subtype="PCM_U8")
    sf.write(folder / "eleven-minutes-1khz.wav", np.tile(_melody(1.0)[::24], 660), 1000)
    files += [folder / "two-hours-100hz.wav", folder / "eleven-minutes-1khz.wav"]

    # Sample values: NaN, infinity, huge, tiny, clipped, DC, noise.
    for name, audio in {
        "nan-filled": np.full(SR, np.nan, np.float32),
        "inf-filled": np.full(SR, np.inf, np.float32),
        "one-nan": np.where(np.arange(wav.size) == 5000, np.nan, wav).astype(np.float32),
        "huge-values": wav * np.float32(1e30),
        "max-float": np.where(wav > 0, np.finfo(np.float32).max, np.finfo(np.float32).min).astype(np.float32),
        "denormals": wav * np.float32(1e-40),
        "clipped-square": np.sign(np.sin(np.arange(2 * SR) * 2 * np.pi * 220 / SR)).astype(np.float32),
        "dc-offset": np.full(2 * SR, 0.5, np.float32),
        "white-noise": rng.uniform(-1, 1, 2 * SR).astype(np.float32),
    }.items():
        path = folder / f"{name}.wav"
        sf.write(path, audio, SR, subtype="FLOAT")
        files.append(path)
    sf.write(folder / "six-channels-48k.wav", np.repeat(_melody(2.0)[:, None], 6, axis=1), 48000)
    files.append(folder / "six-channels-48k.wav")

    # MIDI content: 100k notes, tempo 0 or absurd, drums only, notes that never end, odd pitches.
    dense = b"".join(_vlq(0) + bytes([0x90, 36 + i % 60, 80]) + _vlq(2) + bytes([0x80, 36 + i % 60, 0])
                     for i in range(100_000))
    put("notes-100k.mid", _smf([dense + END_OF_TRACK], fmt=0))
    scale = _notes(range(60, 72))
    for name, tempo in (("tempo-0", 0), ("tempo-1us", 1), ("tempo-max", 0xFFFFFF)):
        put(f"{name}.mid", _smf([_tempo(tempo) + scale + END_OF_TRACK], fmt=0))
    put("tempo-0-midway.mid", _smf([_notes(range(60, 66)) + _tempo(0) + _notes(range(66, 72)) + END_OF_TRACK], fmt=0))
    put("tempo-2000-changes.mid", _smf([b"".join(_tempo(int(t)) for t in rng.integers(1, 0xFFFFFF, 2000))
                                       + scale + END_OF_TRACK], fmt=0))
    put("tempo-short-meta.mid", _smf([b"\x00\xff\x51\x01\x07" + scale + END_OF_TRACK], fmt=0))
    put("drums-only.mid", _smf([_notes([36, 38, 42, 46] * 8, channel=9) + END_OF_TRACK], fmt=0))
    put("no-notes.mid", _smf([b"\x00\xff\x01\x05hello" + END_OF_TRACK], fmt=0))
    put("never-released.mid", _smf([b"".join(_vlq(120) + bytes([0x90, p, 80]) for p in range(60, 72)) + END_OF_TRACK]))
    put("zero-length-notes.mid", _smf([_notes(range(60, 72), length=0) + END_OF_TRACK], fmt=0))
    put("velocity-0-only.mid", _smf([_notes(range(60, 72), velocity=0) + END_OF_TRACK], fmt=0))
    put("extreme-pitches.mid", _smf([_notes([0, 127, 1, 126, 0, 127]) + END_OF_TRACK], fmt=0))
    put("same-key-overlaps.mid", _smf([b"".join(_vlq(10) + b"\x90\x3c\x50" for _ in range(200))
                                       + b"".join(_vlq(10) + b"\x80\x3c\x00" for _ in range(200)) + END_OF_TRACK]))
    put("tracks-500.mid", _smf([_notes([40 + i % 40]) + END_OF_TRACK for i in range(500)]))
    put("sysex-100k.mid", _smf([b"\x00\xf0" + _vlq(100_000) + b"\x01" * 99_999 + b"\xf7" + scale + END_OF_TRACK]))
    put("notes-after-ten-minutes.mid", _smf([_notes([60]) + _vlq(480 * 1300) + _notes([64])[1:] + END_OF_TRACK]))
    put("pedal-forever.mid", _smf([b"\x00\xb0\x40\x7f" + _notes(range(60, 64), length=20, gap=2000)
                                   + END_OF_TRACK], fmt=0))
    put("mido-type2.mid", _smf([scale + END_OF_TRACK] * 3, fmt=2))

    # Scores: structural garbage and hostile XML.
    put("xml-divisions-0.musicxml", _musicxml(divisions="0"))
    put("xml-divisions-huge.musicxml", _musicxml(divisions="99999999999999999999"))
    put("xml-octave-99.musicxml", _musicxml([("C", 99, 1), ("D", -5, 1)]))
    put("xml-duration-negative.musicxml", _musicxml([("C", 4, -4), ("E", 4, 1)]))
    put("xml-no-parts.musicxml", '<?xml version="1.0"?><score-partwise version="3.1"><part-list/></score-partwise>')
    put("xml-wrong-root.xml", '<?xml version="1.0"?><html><body><p>not a score</p></body></html>')
    put("xml-json.musicxml", '{"score": "partwise", "notes": [60, 64, 67]}')
    put("xml-deep.musicxml", '<?xml version="1.0"?>' + "<a>" * 50_000 + "</a>" * 50_000)
    put("xml-billion-laughs.musicxml",
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
        + ']><score-partwise version="3.1"><work><work-title>&lol9;</work-title></work></score-partwise>')
    put("xml-external-entity.musicxml",
        '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        + _musicxml().split("?>", 1)[1].replace("<part-name>Piano</part-name>", "<part-name>&x;</part-name>"))
    rests = "".join(f'<measure number="{i}"><note><rest/><duration>4</duration></note></measure>'
                    for i in range(2, 501))
    put("xml-500-measures.musicxml", _musicxml().replace("</part>", rests + "</part>"))
    put("mxl-zip-garbage.mxl", b"PK\x03\x04" + rng.bytes(300))
    files += write_oversized_scores(folder)
    put("abc-garbage.abc", "X:1\nT:broken\nM:99/0\nL:1/0\nK:Q#\n|:abc|]]]]:::\n")
    put("krn-garbage.krn", "**kern\n*M0/0\n4ccc#-n\n*-\n" * 5)
    return files, control_files


def write_oversized_scores(folder: Path) -> list[Path]:
    """Scores over `io.midi`'s caps, which music21 must never see: one note too many (UTF-8, UTF-16,
    zipped), an .mxl inflating to 20 MB, and a 17 MB .musicxml (sparse: nothing on disk)."""
    many = _musicxml([("C", 4, 1)] * (MAX_SCORE_NOTES + 1))
    scores = {
        "xml-too-many-notes.musicxml": many.encode(),
        "xml-too-many-notes-utf16.xml": many.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"),
        "mxl-too-many-notes.mxl": _zip_with("score.xml", many.encode()),
        "mxl-deflate-bomb.mxl": _zip_with("score.xml", b"<" * 20_000_000),
    }
    for name, data in scores.items():
        (folder / name).write_bytes(data)
    with open(folder / "xml-17mb-sparse.musicxml", "wb") as f:
        f.truncate(17 * 2**20)
    return [folder / name for name in scores] + [folder / "xml-17mb-sparse.musicxml"]


def _zip_with(name: str, content: bytes) -> bytes:
    """A one-file zip archive (deflated) built by hand: a few kB that inflate to `content`."""
    packed = zlib.compress(content, 9)[2:-4]
    crc = zlib.crc32(content)
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(packed), len(content), len(name), 0)
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(packed), len(content),
                          len(name), 0, 0, 0, 0, 0, 0)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, 46 + len(name), 30 + len(name) + len(packed), 0)
    return local + name.encode() + packed + central + name.encode() + end


# The worker: every entry point on one input, each call under a time cap -------------------------


class CallTimeout(BaseException):
    """Raised by the alarm; a BaseException, so no `except Exception` in the code under test hides it."""


_worker: dict = {}


def _init_worker(scratch: str, tiny_index: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    os.environ["PIANOAPP_HOME"] = str(Path(scratch) / f"home-{os.getpid()}")  # never the real library
    # Pool workers end without atexit, which is what removes the services' scratch folders: keep them here.
    tempfile.tempdir = str(Path(scratch) / f"tmp-{os.getpid()}")
    os.mkdir(tempfile.tempdir)
    import torch

    torch.set_num_threads(1)
    _worker.update(scratch=Path(scratch), tiny_index=Path(tiny_index),
                   uploads=Path(scratch) / f"uploads-{os.getpid()}", out=Path(scratch) / f"out-{os.getpid()}")
    _worker["out"].mkdir()
    signal.signal(signal.SIGALRM, _on_alarm)
    try:
        # Load every model now, so that the per-call cap measures the call, not the first load; both
        # workers at once, before one of them builds the small index (match refuses until it exists).
        for call in _entry_points(ASSETS / "joplin_maple_leaf_rag_opening.flac").values():
            try:
                call()
            except PianoappError:  # render and the lead-sheet reader refuse a recording
                pass
        with open(Path(scratch) / "tiny-index.lock", "w") as lock:  # the first worker builds it, once
            fcntl.flock(lock, fcntl.LOCK_EX)
            from pianoapp.index import is_index
            from pianoapp.services.library import build_index

            if not is_index(tiny_index):
                build_index([ASSETS / name for name in INDEXED_ASSETS], tiny_index)
    except BaseException:  # noqa: BLE001 - reported by every task: a failing initializer restarts for ever
        _worker["broken"] = traceback.format_exc()


def _on_alarm(signum, frame):
    raise CallTimeout


def _entry_points(path: Path) -> dict:
    from pianoapp.services import arrange, continue_, convert, explore, library, match, preview

    out = _worker["out"] / path.name.replace(".", "_")
    entries = {
        "preview": lambda: _valid_preview(preview.preview_file(path)),
        "read_query": lambda: _valid_query(match.read_query(path)),
        "match": lambda: _valid_match(match.match(path, index_dir=_worker["tiny_index"], k=3)),
        "continue": lambda: _valid_midi(continue_.continue_file(path, f"{out}.continue.mid", seconds=1.0, seed=0)),
        "add_uploads": lambda: _valid_upload(library.add_uploads([path], _worker["uploads"])),
        "render": lambda: _valid_audio_file(convert.render_file(path, f"{out}.render.wav")),
        "transcribe": lambda: _valid_midi(convert.transcribe_file(path, f"{out}.transcribe.mid")),
        "explore.file_point": lambda: _valid_array(explore.file_point(path).embedding),
        "arrange.load_leadsheet": lambda: _valid_leadsheet(arrange.load_leadsheet(path)[0]),
        "arrange.load_reference": lambda: _valid_array(arrange.load_reference(path)[0]),
    }
    if path.name in CLI_SAMPLE:  # and the command line's door, `cli.main`, with the models already loaded
        command = CLI_SAMPLE[path.name]
        entries[f"pianoapp {command}"] = lambda: _run_cli(_cli(command, path, _worker["out"], _worker["tiny_index"]))
    return entries


def run_input(job: tuple[str, bool]) -> tuple[str, list[tuple[str, str, str]]]:
    """(input name, [(entry point, outcome, detail)]) for (path, whether the model doors take it too):
    outcome "ok", "refused" (detail: the error's type, exit code and message), "bug" (the traceback)
    or "timeout"."""
    path, with_models = Path(job[0]), job[1]
    if "broken" in _worker:
        return path.name, [("worker start", "bug", _worker["broken"])]
    outcomes = []
    for entry, call in _entry_points(path).items():
        if entry in MODEL_DOORS and not with_models:
            continue
        (_worker["scratch"] / f"current-{os.getpid()}").write_text(f"{path.name} through {entry}")
        signal.alarm(CALL_CAP_S)
        try:
            call()
            outcomes.append((entry, "ok", ""))
        except CallTimeout:
            outcomes.append((entry, "timeout", f"over {CALL_CAP_S} s"))
        except PianoappError as err:
            outcomes.append((entry, "refused", f"{type(err).__name__} {err.exit_code} {err}"))
        except BaseException:  # noqa: BLE001 - MemoryError included: the code must make it a PianoappError
            outcomes.append((entry, "bug", traceback.format_exc(limit=-6)))
        finally:
            signal.alarm(0)
    return path.name, outcomes


def read_only_copies(files: list[Path]) -> set[str]:
    """The damaged copies that skip the model doors. A copy that still decodes is, to the models, much
    the music of its source: of each source's truncations and flips, only the mildest (the longest cut,
    the one-bit flip: the likeliest to decode) goes through every door; the others go through the doors
    that read and check a file, where their damage shows."""
    copies: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for path in files:
        if copy := COPY.fullmatch(path.name):
            copies.setdefault((copy["damage"], copy["source"]), []).append((int(copy["n"]), path.name))
    mildest = {max(group)[1] if damage == "trunc" else min(group)[1] for (damage, _), group in copies.items()}
    return {name for group in copies.values() for _, name in group} - mildest


def _run_cli(argv: list[str]) -> None:
    from pianoapp.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(argv)
    _assert_exit_0_or_2_with_one_line(code, stderr.getvalue())


def _valid_array(x: np.ndarray) -> None:
    assert x.size and np.all(np.isfinite(x)), "empty or non-finite array"


def _valid_preview(p) -> None:
    _valid_array(p.audio[1])
    assert p.wav_path.is_file() and p.summary and p.figure is not None


def _valid_query(q) -> None:
    assert q.duration_s >= 4.0 and (q.audio is not None or q.notes is not None)


def _valid_match(report: dict) -> None:
    assert report["results"], "no results"
    for hit in report["results"]:
        assert np.isfinite(hit["score"]) and 0 <= hit["start_s"] <= hit["end_s"], hit


def _valid_midi(path: Path) -> None:
    import pretty_midi

    assert any(inst.notes for inst in pretty_midi.PrettyMIDI(str(path)).instruments), "a MIDI file without notes"


def _valid_audio_file(path: Path) -> None:
    _valid_array(sf.read(path, dtype="float32")[0])


def _valid_upload(report) -> None:
    from pianoapp.services.library import _content_hash

    assert report.added or report.duplicates, report.summary()
    for item in report.added:
        stored = Path(item["path"])
        assert stored.parent == _worker["uploads"] / "files" and stored.stem == _content_hash(stored), item["path"]


def _valid_leadsheet(sheet) -> None:
    assert sheet.n_bars >= 1 and sheet.melody, "an empty lead sheet"


# The tests --------------------------------------------------------------------------------------

ENTRY_POINTS = ("preview", "read_query", "match", "continue", "add_uploads", "render", "transcribe",
                "explore.file_point", "arrange.load_leadsheet", "arrange.load_reference")
MODEL_DOORS = ("match", "continue", "add_uploads", "transcribe", "explore.file_point")  # run models on what they read
COPY = re.compile(r"(?P<damage>trunc|flip)(?P<n>\d+)-(?P<source>.+)")
BACKSTOP_S = 10 * CALL_CAP_S + 120  # no input finished for this long: a worker hangs in C code or died
pytestmark = pytest.mark.timeout(900)  # the first test also waits for the fuzzing (the module fixture)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """{input name: [(entry point, outcome, detail)]} for every bad file and control, and the scratch
    folder (the small index, each worker's uploads index)."""
    started = time.monotonic()
    root = tmp_path_factory.mktemp("fuzz")
    scratch = root / "scratch"
    scratch.mkdir()
    results = {}
    # spawn: a fresh interpreter per worker, without pytest's threads; each worker loads the models once,
    # meanwhile the bad files are written.
    pool = multiprocessing.get_context("spawn").Pool(
        WORKERS, initializer=_init_worker, initargs=(str(scratch), str(scratch / "tiny-index")))
    try:
        files, controls = make_corpus(root / "corpus")
        # Biggest first, so that the slowest inputs do not finish alone at the end.
        jobs = sorted(controls + files, key=lambda p: -p.stat().st_size)
        read_only = read_only_copies(files)
        done = pool.imap_unordered(run_input, [(str(p), p.name not in read_only) for p in jobs])
        for _ in range(len(controls) + len(files)):
            try:
                name, outcomes = done.next(timeout=BACKSTOP_S)
            except multiprocessing.TimeoutError:
                busy = [p.read_text() for p in scratch.glob("current-*")]
                pytest.fail(f"no input finished in {BACKSTOP_S} s; the workers were last on: {busy}")
            results[name] = outcomes
    finally:
        pool.terminate()
        pool.join()
    _record_summary(files, controls, results, time.monotonic() - started)
    return {"files": files, "controls": controls, "results": results, "scratch": scratch}


def _record_summary(files: list[Path], controls: list[Path], results: dict, seconds: float) -> None:
    """What the issue note quotes, in test-artifacts/fuzz-summary.json: how many inputs went through
    which doors, and how the calls ended (refusals by error type)."""
    calls = [(outcome, detail) for outcomes in results.values() for _, outcome, detail in outcomes]
    summary = {
        "bad_files": len(files), "controls": len(controls), "entry_points": list(ENTRY_POINTS),
        "command_line": {"in_process": len(CLI_SAMPLE), "console_script": len(REAL_COMMAND_SAMPLE)},
        "copies_skipping_the_model_doors": len(read_only_copies(files)),
        "calls": len(calls), "outcomes": Counter(outcome for outcome, _ in calls),
        "refusals": Counter(detail.split(" ", 1)[0] for outcome, detail in calls if outcome == "refused"),
        "seconds": round(seconds),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz-summary.json").write_text(json.dumps(summary, indent=1))
    print(f"fuzzed {len(files)} bad files and {len(controls)} controls: {len(calls)} calls in {seconds:.0f} s")


def test_at_least_200_bad_files_of_every_kind(fuzzed):
    names = [p.name for p in fuzzed["files"]]
    assert len(names) == BAD_FILES >= 200 and len(set(names)) == len(names)
    kinds = Counter(re.split(r"[-.]", name)[0].rstrip("0123456789") for name in names)
    for kind in ("trunc", "flip", "empty", "random", "text", "hdr", "tempo", "xml"):
        assert kinds[kind] >= 3, kinds


def test_every_entry_point_gives_a_clear_error_or_a_valid_result(fuzzed):
    failures, refusals = [], Counter()
    for name in (p.name for p in fuzzed["files"]):
        for entry, outcome, detail in fuzzed["results"][name]:
            if outcome == "refused":
                kind, exit_code, message = detail.split(" ", 2)
                refusals[kind] += 1
                try:
                    one_sentence(message)
                    assert exit_code == "2" or kind == NotAvailableError.__name__, "not a bad-input error"
                except AssertionError as err:
                    failures.append(f"{name} through {entry}: {detail} ({err})")
            elif outcome != "ok":
                failures.append(f"{name} through {entry}: {outcome}\n{detail}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
    assert sum(refusals.values()) > 1000, refusals


def test_undamaged_controls_pass_every_entry_point_that_takes_them(fuzzed):
    """The harness really runs each entry point: every one succeeds on some control file."""
    succeeded = {entry for p in fuzzed["controls"] for entry, outcome, _ in fuzzed["results"][p.name]
                 if outcome == "ok"}
    assert succeeded == set(ENTRY_POINTS)
    for name in ("mozart_k545_opening.mid", "mozart_k545_opening.flac"):
        refused = [(entry, detail) for entry, outcome, detail in fuzzed["results"][name] if outcome != "ok"]
        assert [entry for entry, _ in refused] == (
            ["render", "arrange.load_leadsheet"] if name.endswith(".flac") else ["transcribe"]), refused


def test_uploads_indexes_hold_only_content_named_copies(fuzzed):
    """After hundreds of failed and some successful uploads: the index opens, each item is a copy
    named by its content hash in files/, and nothing else is left behind (no temp files, no orphans)."""
    from pianoapp.index import Index
    from pianoapp.services.library import SPACE, _content_hash

    folders = sorted(fuzzed["scratch"].glob("uploads-*"))
    assert folders
    for folder in folders:
        index = Index.open(folder, space=SPACE)
        stored = sorted(Path(it["path"]) for it in index.items)
        assert stored == sorted((folder / "files").iterdir())
        assert all(p.stem == _content_hash(p) for p in stored)
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_oversized_scores_are_refused_before_music21_reads_them(tmp_path, monkeypatch):
    """Counting a score's notes takes milliseconds; music21 would take minutes over them, or inflate the bomb."""
    import music21

    from pianoapp.io.leadsheet import read_leadsheet
    from pianoapp.io.midi import read_midi

    monkeypatch.setattr(music21.converter, "parse", lambda *args, **kwargs: pytest.fail("music21 parsed it"))
    for path in write_oversized_scores(tmp_path):
        for read in (read_midi, read_leadsheet):
            with pytest.raises(TooLargeError) as refused:
                read(path)
            assert re.search(r"notes and rests|MB of score text", one_sentence(refused.value)), refused.value


# Through the command line: exit status 2 (or 0), one line on stderr -----------------------------

CLI_SAMPLE = {  # input: the command it goes through; every kind of bad file, every command
    "trunc3-mozart_k545_.mid": "render", "text.musicxml": "render", "flac-as.mid": "render",
    "hdr-65535-tracks.mid": "render", "tempo-max.mid": "render", "mxl-deflate-bomb.mxl": "render",
    "krn-garbage.krn": "render", "xml-billion-laughs.musicxml": "render",
    "trunc2-melody.wav": "transcribe", "flip1-melody.mp3": "transcribe", "random.flac": "transcribe",
    "midi-as.wav": "transcribe", "two-hours-sparse.wav": "transcribe",
    "flip1-joplin_maple.mid": "continue", "empty.mid": "continue", "one-ms.wav": "continue",
    "notes-100k.mid": "continue", "drums-only.mid": "continue",
    "flip0-joplin_maple.mid": "match", "hdr-hours.wav": "match", "nan-filled.wav": "match",
    "flip0-melody.ogg": "index add", "two-hours-100hz.wav": "index add", "tempo-0.mid": "index add",
}
COMMANDS = ("render", "transcribe", "continue", "match", "index add")
# The whole sample goes through `cli.main` in the workers, which hold the models; the real console
# script (a fresh interpreter: import-time output, exit status) runs each command's first input.
REAL_COMMAND_SAMPLE = {command: next(name for name, c in CLI_SAMPLE.items() if c == command) for command in COMMANDS}
PROGRESS = re.compile(r"^\s*$|.*…$|^\w[\w ]*: +\d+%\|")  # stage lines ("matching…") and tqdm bars, before the error


def _cli(command: str, path: Path, tmp: Path, tiny_index: Path) -> list[str]:
    out = tmp / path.name.replace(".", "_")
    if command == "index add":
        index = tmp / f"index-{path.name}"
        shutil.copytree(tiny_index, index)
        return ["index", "add", str(path), "--index", str(index)]
    if command == "match":
        return ["match", str(path), "--index", str(tiny_index), "-k", "3"]
    if command == "continue":
        return ["continue", str(path), "--seconds", "1", "--out", f"{out}.mid"]
    return [command, str(path), "--out", f"{out}.{'wav' if command == 'render' else 'mid'}"]


def _assert_exit_0_or_2_with_one_line(code: int, stderr: str) -> None:
    assert code in (0, 2), f"exit status {code}: {stderr[-800:]}"
    assert "Traceback" not in stderr, stderr[-800:]
    if code == 2:
        assert_one_line_error("\n".join(line for line in stderr.splitlines() if not PROGRESS.match(line)))


def test_command_line_sample_exits_2_or_0_with_one_line(fuzzed):
    assert len(CLI_SAMPLE) >= 20 and set(CLI_SAMPLE) <= {p.name for p in fuzzed["files"]}
    assert set(CLI_SAMPLE.values()) == set(COMMANDS)
    outcomes = {name: {entry: (outcome, detail) for entry, outcome, detail in fuzzed["results"][name]}
                for name in CLI_SAMPLE}
    failures = [f"pianoapp {command} {name}: {' '.join(outcomes[name][f'pianoapp {command}'])}"
                for name, command in CLI_SAMPLE.items() if outcomes[name][f"pianoapp {command}"][0] != "ok"]
    assert not failures, "\n".join(failures)


def test_the_console_script_exits_2_or_0_with_one_line(fuzzed, tmp_path):
    by_name = {p.name: p for p in fuzzed["files"]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIANOAPP_HOME": str(tmp_path / "home"), "PIANOAPP_DEBUG": "",
           "TMPDIR": str(tmp_path)}
    jobs = [_cli(command, by_name[name], tmp_path, fuzzed["scratch"] / "tiny-index")
            for command, name in REAL_COMMAND_SAMPLE.items()]
    failures, running = [], []
    while jobs or running:
        while jobs and len(running) < WORKERS:
            argv = jobs.pop()
            proc = subprocess.Popen([PIANOAPP, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
            running.append((argv, proc, time.monotonic()))
        for job in list(running):
            argv, proc, started = job
            if proc.poll() is None and time.monotonic() - started < 60 + CALL_CAP_S:
                continue
            running.remove(job)
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
            try:
                _assert_exit_0_or_2_with_one_line(proc.returncode, err)
            except AssertionError as why:
                failures.append(f"pianoapp {' '.join(argv[:2])}…: {why}")
        time.sleep(0.1)
    assert not failures, "\n".join(failures)
