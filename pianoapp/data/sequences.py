"""Token sequences for LM training: each file's piano notes read once and cached as a compact array,
then random windows of notes, augmented as Aria does (±5 semitones, ±20% tempo, ±10 velocity) and
encoded on the fly.

A piece is an int32 array (n, 4) of [start_ms, end_ms, pitch, velocity], sorted by start: the
output of `read_midi` + `piano_notes` (pedal folded in), so the cache is independent of the
tokenizer and is keyed by the file's content and `NOTES_FORMAT`.
"""

import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import torch
from torch.utils.data import Dataset

from pianoapp.constants import DEFAULT_DATA_DIR
from pianoapp.errors import BadInputError, PianoappError
from pianoapp.io.midi import piano_notes, read_midi
from pianoapp.tokenizer import Tokenizer

NOTES_FORMAT = 2  # bump when what `piano_notes` returns for a file changes
START, END, PITCH, VELOCITY = range(4)


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pianoapp" / f"notes-v{NOTES_FORMAT}"


def notes_to_array(notes: list[pretty_midi.Note]) -> np.ndarray:
    rows = [(round(n.start * 1000), round(n.end * 1000), n.pitch, n.velocity) for n in notes]
    return np.array(rows, dtype=np.int32).reshape(-1, 4)


def array_to_notes(piece: np.ndarray) -> list[pretty_midi.Note]:
    return [pretty_midi.Note(int(v), int(p), s / 1000, e / 1000) for s, e, p, v in piece.tolist()]


def read_piece(path: str | os.PathLike) -> np.ndarray:
    """A file's notes as one piano part; an empty array if it cannot be read (reported on stderr)."""
    try:
        return notes_to_array(piano_notes(read_midi(path, max_seconds=float("inf"))))
    except PianoappError as err:
        print(f"skipping {path}: {err}", file=sys.stderr)
        return np.zeros((0, 4), dtype=np.int32)


def load_pieces(paths: list[Path], *, cache_dir: Path | None = None) -> list[np.ndarray]:
    """Each file's notes, from the cache when it holds them; files read in parallel otherwise.

    Unreadable or empty files give empty arrays (cached too, so they are not retried).
    """
    cache_dir = cache_dir or cache_root()
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths]
    pieces: list[np.ndarray | None] = []
    for key in keys:
        cached = cache_dir / f"{key}.npy"
        pieces.append(np.load(cached) if cached.is_file() else None)
    missing = [i for i, piece in enumerate(pieces) if piece is None]
    if missing:
        # Ranks started by torchrun share the machine's cores.
        workers = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        todo = [paths[i] for i in missing]
        if workers > 1 and len(todo) > 8:
            with ProcessPoolExecutor(min(workers, 16)) as pool:
                read = list(pool.map(read_piece, todo, chunksize=4))
        else:
            read = [read_piece(p) for p in todo]
        for i, piece in zip(missing, read):
            pieces[i] = piece
            tmp = cache_dir / f"{keys[i]}.{os.getpid()}.tmp.npy"
            np.save(tmp, piece)
            os.replace(tmp, cache_dir / f"{keys[i]}.npy")  # atomic: parallel ranks may write the same key
    return pieces


COLLECTION_NAMES = {"asap": "ASAP", "pop909": "POP909", "nottingham": "Nottingham"}


def corpus_items(collections: tuple[str, ...], split: str, *, data_dir: Path | None = None,
                 max_items: int = 0) -> list:
    """The items of `collections` in one split, ASAP's quantized scores left out (performances
    only); `max_items` > 0 keeps that many, spread evenly over the list (and so over the collections)."""
    from pianoapp.data.corpora import load_items

    items = [item for item in load_items(collections, data_dir=data_dir, split=split)
             if item.collection != "asap" or item.meta.get("kind") == "performance"]
    if max_items and len(items) > max_items:
        items = [items[i] for i in np.linspace(0, len(items) - 1, max_items).round().astype(int)]
    return items


def corpus_pieces(collections: tuple[str, ...], split: str, *, data_dir: Path | None = None,
                  max_items: int = 0) -> list[np.ndarray]:
    """The notes of each readable file of `corpus_items`, empty files left out."""
    paths = [Path(item.path) for item in corpus_items(collections, split, data_dir=data_dir, max_items=max_items)]
    pieces = [piece for piece in load_pieces(paths) if len(piece)]
    if not pieces:
        names = " or ".join(COLLECTION_NAMES.get(c, c) for c in collections)
        raise BadInputError(
            f"No readable {names} files in the {split} split of {data_dir or DEFAULT_DATA_DIR}; "
            f"pass --data with the folder that holds {', '.join(f'{c}/' for c in collections)}."
        )
    return pieces


@dataclass(frozen=True)
class Augment:
    transpose: int = 5  # semitones, either way, kept inside the piano's range
    tempo: float = 0.2  # relative, either way
    velocity: int = 10  # added to every note, either way


class TokenWindows(Dataset):
    """Item i: token ids of a window of notes from the corpus, a pure function of (seed, i).

    A window is enough consecutive notes to fill `context_len + 1` tokens, shifted to start at 0,
    augmented (unless `augment` is None), encoded with <S> (and <E> when it reaches the piece's
    end), cropped and right-padded with <PAD> to exactly `context_len + 1` ids. Windows are drawn
    uniformly over every start position of every piece, so long pieces count for more.
    """

    def __init__(self, pieces: list[np.ndarray], tokenizer: Tokenizer, *, context_len: int, seed: int = 0,
                 augment: Augment | None = Augment()):
        self.pieces = [p for p in pieces if len(p)]
        if not self.pieces:
            raise ValueError("no notes to make windows from")  # callers check their data first
        self.tokenizer, self.context_len, self.seed, self.augment = tokenizer, context_len, seed, augment
        self.window_notes = context_len // 3 + 2  # a note is 3 tokens; <T> tokens only add to this
        starts = np.array([max(1, len(p) - self.window_notes + 1) for p in self.pieces])
        self.first_start = np.concatenate([[0], np.cumsum(starts)])

    def __getitem__(self, i: int) -> torch.Tensor:
        ids = self.window(i)[: self.context_len + 1]
        ids += [self.tokenizer.pad_id] * (self.context_len + 1 - len(ids))
        return torch.tensor(ids, dtype=torch.long)

    def window(self, i: int) -> list[int]:
        """The window's ids before cropping and padding."""
        rng = np.random.default_rng([self.seed, i])
        start = int(rng.integers(self.first_start[-1]))
        k = int(np.searchsorted(self.first_start, start, side="right")) - 1
        piece = self.pieces[k]
        first = start - int(self.first_start[k])
        notes = piece[first : first + self.window_notes].astype(np.float64)
        reaches_end = first + self.window_notes >= len(piece)
        notes[:, [START, END]] -= notes[0, START]
        if self.augment:
            a = self.augment
            lo = max(-a.transpose, self.tokenizer.config.pitch_min - int(notes[:, PITCH].min()))
            hi = min(a.transpose, self.tokenizer.config.pitch_max - int(notes[:, PITCH].max()))
            notes[:, PITCH] += rng.integers(lo, hi + 1) if lo <= hi else 0
            notes[:, [START, END]] *= rng.uniform(1 - a.tempo, 1 + a.tempo)
            notes[:, VELOCITY] = np.clip(notes[:, VELOCITY] + rng.integers(-a.velocity, a.velocity + 1), 1, 127)
        return self.tokenizer.encode(array_to_notes(notes), add_eos=reaches_end)
