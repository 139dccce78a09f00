"""Aligned audio/MIDI segments for the matcher.

The corpus has no audio, so the opening of each piece (ASAP performances, POP909, Nottingham) is
rendered with FluidSynth once per variant, a soundfont and a time scale, and cached as int16 .npy
under ~/.cache/pianoapp/renders-v1/, keyed by the notes, soundfont, time scale and length. The
time scale stretches the notes before rendering, so tempo variants stay exactly aligned with their
MIDI. Notes come from `load_pieces` (sustain pedal folded into durations) and are rendered as they
are, so what sounds is what the MIDI side sees.

A segment is a 4 s window (1 s hop) of one render holding at least one note onset, paired with the
notes sounding in it, their times relative to the window's start and clipped to it.
"""

import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
from torch.utils.data import Dataset
from tqdm import tqdm

from pianoapp import constants
from pianoapp.data.augment import AudioAugment, augment_audio
from pianoapp.data.sequences import END, PITCH, START, VELOCITY, corpus_items, corpus_pieces

SEGMENT_SECONDS = 4.0
HOP_SECONDS = 1.0
SEGMENT_SAMPLES = round(SEGMENT_SECONDS * constants.SAMPLE_RATE)
MAX_NOTES = 256  # notes sounding in one window; past this the earliest are dropped
COLLECTIONS = ("asap", "pop909", "nottingham")
TRAIN_SOUNDFONTS = ("FluidR3_GM", "MuseScore_General")
HELD_OUT_SOUNDFONT = "TimGM6mb"  # never trained on: the robustness test's timbre
TIME_SCALE_RANGE = (0.8, 1.25)  # tempo variants stretch note times by a log-uniform factor in here
RENDERS_VERSION = 1  # bump when what a cached render holds for a key changes
INT16_SCALE = 32767


def render_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pianoapp" / f"renders-v{RENDERS_VERSION}"


def matcher_items(split: str, *, data_dir: Path | None = None, max_items: int = 0) -> list:
    """The corpus items the matcher uses in one split (see `corpus_items`)."""
    return corpus_items(COLLECTIONS, split, data_dir=data_dir, max_items=max_items)


def matcher_pieces(split: str, *, data_dir: Path | None = None, max_items: int = 0) -> list[np.ndarray]:
    """The notes ([start_ms, end_ms, pitch, velocity]) of each readable file of `matcher_items`."""
    return corpus_pieces(COLLECTIONS, split, data_dir=data_dir, max_items=max_items)


@dataclass(frozen=True, eq=False)
class Render:
    """One cached rendering of a piece's opening, and the notes it plays."""

    path: Path  # int16 .npy at SAMPLE_RATE
    notes: np.ndarray  # (n, 4) float64 [start_s, end_s, pitch, velocity], sorted by start
    soundfont: str
    time_scale: float

    def samples(self) -> int:
        return np.load(self.path, mmap_mode="r").shape[0]

    def audio(self, start: int, length: int) -> np.ndarray:
        """`length` samples from sample `start`, float32 in [-1, 1]."""
        return np.load(self.path, mmap_mode="r")[start : start + length].astype(np.float32) / INT16_SCALE


def render_pieces(
    pieces: list[np.ndarray], *, soundfonts: tuple[str, ...], per_piece: int, seconds: float,
    cache_dir: Path | None = None,
) -> list[Render]:
    """`per_piece` renders of the first `seconds` of each piece, rendering those not cached yet.

    Variant 0 plays at the written tempo, the others time-scaled; consecutive variants cycle through
    `soundfonts` from a per-piece starting point. All choices are seeded by the notes.
    """
    cache_dir = cache_dir or render_cache_root()
    cache_dir.mkdir(parents=True, exist_ok=True)
    renders = []
    for piece in pieces:
        digest = hashlib.sha1(piece.tobytes()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        for v in range(per_piece):
            soundfont = soundfonts[(digest[8] + v) % len(soundfonts)]
            scale = 1.0 if v == 0 else round(float(np.exp(rng.uniform(*np.log(TIME_SCALE_RANGE)))), 2)
            notes = piece.astype(np.float64)
            notes[:, [START, END]] *= scale / 1000
            notes = notes[(notes[:, START] < seconds) & (notes[:, END] > notes[:, START])]
            tag = f"{soundfont}|{scale}|{seconds}|{constants.SAMPLE_RATE}".encode()
            key = hashlib.sha1(tag + piece.tobytes()).hexdigest()
            renders.append(Render(cache_dir / f"{key}.npy", notes, soundfont, scale))
    todo = [r for r in renders if not r.path.is_file()]
    if todo:
        jobs = [(r.path, r.notes, r.soundfont, seconds) for r in todo]
        # Ranks started by torchrun share the machine's cores.
        workers = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        progress = tqdm(total=len(jobs), desc="rendering segments audio", file=sys.stderr, dynamic_ncols=True)
        if workers > 1 and len(jobs) > 16:  # below this, starting workers and loading soundfonts costs more
            with ProcessPoolExecutor(min(workers, 16)) as pool:
                for _ in pool.map(_render_file, *zip(*jobs)):
                    progress.update()
        else:
            for job in jobs:
                _render_file(*job)
                progress.update()
        progress.close()
    return renders


def _render_file(path: Path, notes: np.ndarray, soundfont: str, seconds: float) -> None:
    from pianoapp.io.midi import notes_to_midi
    from pianoapp.io.render import render

    if path.is_file():  # another rank got there first
        return
    played = [pretty_midi.Note(int(v), int(p), s, e) for s, e, p, v in notes.tolist()]
    audio = render(notes_to_midi(played), soundfont=soundfont)[: round(seconds * constants.SAMPLE_RATE)]
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.round(np.clip(audio, -1, 1) * INT16_SCALE).astype(np.int16))
    os.replace(tmp, path)  # atomic: parallel ranks may write the same key


def note_rows(notes: list[pretty_midi.Note]) -> np.ndarray:
    """Notes as `midi_inputs` reads them: float64 [start_s, end_s, pitch, velocity] rows, by start."""
    rows = sorted((n.start, n.end, n.pitch, n.velocity) for n in notes)
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def midi_inputs(notes: np.ndarray, start_s: float, seconds: float = SEGMENT_SECONDS) -> dict[str, np.ndarray]:
    """The notes ([start_s, end_s, pitch, velocity], sorted by start) sounding in a window, as the
    MIDI encoder's padded inputs: onset and end relative to the window start, clipped to it."""
    end_s = start_s + seconds
    sounding = notes[(notes[:, START] < end_s) & (notes[:, END] > start_s)][-MAX_NOTES:]
    n = len(sounding)
    onset = np.clip(sounding[:, START] - start_s, 0, seconds)
    out = {
        "pitch": np.zeros(MAX_NOTES, np.int64),
        "velocity": np.zeros(MAX_NOTES, np.int64),
        "onset": np.zeros(MAX_NOTES, np.float32),
        "duration": np.zeros(MAX_NOTES, np.float32),
        "mask": np.zeros(MAX_NOTES, bool),
    }
    out["pitch"][:n] = sounding[:, PITCH]
    out["velocity"][:n] = sounding[:, VELOCITY]
    out["onset"][:n] = onset
    out["duration"][:n] = np.clip(sounding[:, END] - start_s, 0, seconds) - onset
    out["mask"][:n] = True
    return out


class Segments(Dataset):
    """Every window of some renders that holds a note onset; item j is window j, unaugmented:
    {"audio": float32 (SEGMENT_SAMPLES,), "midi": `midi_inputs`}."""

    def __init__(self, renders: list[Render]):
        self.renders = renders
        hop = round(HOP_SECONDS * constants.SAMPLE_RATE)
        rows = []
        for k, render in enumerate(renders):
            starts = np.arange(0, render.samples() - SEGMENT_SAMPLES + 1, hop)
            t0 = starts / constants.SAMPLE_RATE
            onsets = render.notes[:, START]
            count = np.searchsorted(onsets, t0 + SEGMENT_SECONDS) - np.searchsorted(onsets, t0)
            rows += [(k, s) for s in starts[count > 0]]
        self.windows = np.array(rows, dtype=np.int64).reshape(-1, 2)  # (render index, first sample)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, j: int) -> dict:
        return self.example(j)

    def example(self, j: int, augment: AudioAugment | None = None, rng: np.random.Generator | None = None) -> dict:
        k, start = self.windows[j]
        render = self.renders[k]
        audio = render.audio(int(start), SEGMENT_SAMPLES)
        if augment is not None:
            audio = augment_audio(audio, rng, augment)
        return {"audio": audio, "midi": midi_inputs(render.notes, start / constants.SAMPLE_RATE)}


class TrainingSegments(Dataset):
    """Item i: a window drawn uniformly from `segments`, augmented, as a pure function of (seed, i)."""

    def __init__(self, segments: Segments, *, seed: int, augment: AudioAugment | None):
        if not len(segments):
            raise ValueError("no segments to train on")  # callers check their data first
        self.segments, self.seed, self.augment = segments, seed, augment

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        return self.segments.example(int(rng.integers(len(self.segments))), self.augment, rng)
