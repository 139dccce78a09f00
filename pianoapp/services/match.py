"""Audio↔MIDI matching: which indexed piece a recording (or a MIDI file) comes from, and where in it.

Two stages (DESIGN.md). The query is cut into 4 s windows every second and embedded by the matcher;
one matrix product against every indexed window (`index.Windows`) gives each piece's best fit to
each query window, normalised by the piece's cohort statistics (`cohort_statistics`), and
shortlists the pieces that fit best over the whole query. Each shortlisted piece is then aligned with the
whole query by subsequence DTW on chroma, twice: the query's audio chroma and the chroma of its
notes (a recording's basic-pitch transcription, a MIDI file's own notes), each against the piece's
note chroma. The score is the mean of the two alignments' similarities; the path gives the span.
On validation (`pianoapp.evaluate.matching`), DTW on the matcher's own windows placed excerpts
tens of seconds off and ranked worse than chroma: the windows tell pieces apart in bulk, not
moment by moment.

Matching crosses modalities, as the matcher was trained to: a recording meets indexed MIDI and
scores through the audio tower, and indexed recordings through the MIDI tower of its transcription;
a MIDI query meets recordings through the MIDI tower, and other MIDI through its own rendering.

The best hit is a match when its score stands far enough above the best hit of any other piece
(`margin`), by the threshold calibrated on the validation split (`bench/calibrate_match.py` writes
models/matcher/calibration.json); otherwise the closest pieces are still listed, marked as no
match. The margin, not the score itself, decides: music that resembles many pieces (common
progressions, accompaniment figures) scores high against all of them, while a piece that is in the
index stands out (on validation it tells right answers from wrong ones with AUC 0.93; the score, 0.82).
"""

import functools
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pianoapp import constants
from pianoapp.data.segments import HOP_SECONDS, SEGMENT_SAMPLES, SEGMENT_SECONDS, midi_inputs, note_rows
from pianoapp.data.sequences import END, PITCH, START, VELOCITY
from pianoapp.errors import BadInputError
from pianoapp.index import Index, ItemTimeline, Windows

MATCHER_DIR = constants.MODELS_DIR / "matcher"
CALIBRATION = "calibration.json"
COHORT = "cohort.npz"  # beside the model: window embeddings of unrelated training music, per tower
# Pieces aligned by DTW in the second stage. Chosen on the validation split (190 pieces indexed, 100 10 s
# TimGM6mb excerpts at 20 dB SNR): the true piece was among the first 48 for 0.87 of them, 64 for 0.96,
# 96 for all; its two alignments cost about 3 ms a piece, so 96 add about 0.3 s to a query at any size.
SHORTLIST = 96
MARGIN_HITS = 10  # hits ranked before the margin is taken: the runner-up piece is among them
SILENT_WINDOW_DBFS = -55.0  # quieter windows hold nothing to match
CHROMA_HOP_S = 0.1  # chroma frame: fine enough for sub-second starts, light enough to keep for every item
BATCH = 32


# Windows ----------------------------------------------------------------------------------------


def matcher_model(model_dir: Path | None = None) -> torch.nn.Module:
    from pianoapp.models.checkpoint import load_model

    return load_model(model_dir or MATCHER_DIR, device="cpu")


@functools.cache
def windows_space(model_dir: Path = MATCHER_DIR) -> str:
    """Names the checkpoint (and cohort) window embeddings come from: indexes built with others must
    be rebuilt."""
    digest = hashlib.sha256()
    for name in ("model.safetensors", COHORT):
        if (Path(model_dir) / name).is_file():
            digest.update((Path(model_dir) / name).read_bytes())
    return f"matcher/{digest.hexdigest()[:12]}"


@functools.cache
def cohort(model_dir: Path = MATCHER_DIR) -> dict[str, np.ndarray] | None:
    """Unit window embeddings of unrelated training music, "audio" and "midi" (`bench/calibrate_match.py`)."""
    path = Path(model_dir) / COHORT
    if not path.is_file():
        return None
    with np.load(path) as f:
        return {tower: f[tower].astype(np.float32) for tower in ("audio", "midi")}


def cohort_statistics(embeddings: np.ndarray, other_tower: str) -> tuple[float, float]:
    """How close an item's best window comes to unrelated queries of the other tower: mean and std.

    Long pieces and generic textures have some window near almost anything; normalising an item's
    best similarity by these (as speaker verification's Z-norm does) lets the one that fits the
    query stand out. Measured on a 275-piece collection: the true piece among the first 24 for 0.60
    of 10 s excerpts, against 0.27 for the raw best similarity."""
    refs = cohort()
    if refs is None or not len(embeddings):
        return 0.0, 1.0
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    best = (refs[other_tower] @ unit.T).max(axis=1)
    return float(best.mean()), float(best.std() + 1e-6)


def new_windows(model_dir: Path = MATCHER_DIR) -> Windows | None:
    """Empty windows for a new index, or None when no matcher is installed (search still works)."""
    if not (Path(model_dir) / "model.safetensors").is_file():
        return None
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return Windows.empty(windows_space(Path(model_dir)), config["model"]["embed_dim"])


def window_starts(seconds: float) -> np.ndarray:
    """Window start times covering `seconds` (one window, padded, for anything shorter than one)."""
    return np.arange(0.0, max(seconds - SEGMENT_SECONDS, 0.0) + 1e-6, HOP_SECONDS)


@torch.inference_mode()
def audio_windows(audio: np.ndarray, model: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Audio-tower embeddings (n, dim) of the audible 4 s windows of a recording, and their start times."""
    model = model or matcher_model()
    starts = window_starts(audio.size / constants.SAMPLE_RATE)
    padded = np.pad(audio, (0, max(0, round(starts[-1] * constants.SAMPLE_RATE) + SEGMENT_SAMPLES - audio.size)))
    first = np.round(starts * constants.SAMPLE_RATE).astype(int)
    frames = np.stack([padded[s:s + SEGMENT_SAMPLES] for s in first])
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    audible = 20 * np.log10(np.maximum(rms, 1e-10)) > SILENT_WINDOW_DBFS
    frames, starts = frames[audible], starts[audible]
    out = [model.embed_audio(torch.from_numpy(frames[i:i + BATCH])).embedding.numpy()
           for i in range(0, len(frames), BATCH)]
    return _stack(out, model), starts.astype(np.float32)


@torch.inference_mode()
def note_windows(notes: np.ndarray, model: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MIDI-tower embeddings (n, dim) of the 4 s windows of a piece's notes (`note_rows`) holding an
    onset, and their start times."""
    from torch.utils.data import default_collate

    model = model or matcher_model()
    if not len(notes):
        return _stack([], model), np.zeros(0, np.float32)
    starts = window_starts(float(notes[:, END].max()))
    onsets = notes[:, START]
    holds = np.searchsorted(onsets, starts + SEGMENT_SECONDS) > np.searchsorted(onsets, starts)
    starts = starts[holds]
    out = []
    for i in range(0, len(starts), BATCH):
        batch = default_collate([midi_inputs(notes, float(s)) for s in starts[i:i + BATCH]])
        out.append(model.embed_midi({k: torch.as_tensor(v) for k, v in batch.items()}).embedding.numpy())
    return _stack(out, model), starts.astype(np.float32)


def _stack(parts: list[np.ndarray], model: torch.nn.Module) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, model.config.embed_dim), np.float32)


def item_timeline(kind: str, *, notes: np.ndarray, audio: np.ndarray | None = None,
                  model: torch.nn.Module | None = None) -> ItemTimeline:
    """What an index keeps of an item for matching: a recording's audio windows or a score's note
    windows, and the chroma of its notes (a recording's are its transcription)."""
    embeddings, starts = audio_windows(audio, model) if kind == "audio" else note_windows(notes, model)
    # queries meet an item through the other tower: a recording's windows are met by MIDI queries
    stats = cohort_statistics(embeddings, "midi" if kind == "audio" else "audio")
    return ItemTimeline(embeddings, starts, chroma_of_notes(notes).T, stats)


def chroma_of_notes(notes: np.ndarray) -> np.ndarray:
    """(12, frames) chroma of the sounding notes (`note_rows`), velocity-weighted, frames unit-norm."""
    frames = int(np.ceil((notes[:, END].max() if len(notes) else 0) / CHROMA_HOP_S)) + 1
    chroma = np.zeros((12, frames))
    first = (notes[:, START] / CHROMA_HOP_S).astype(int)
    last = np.maximum(first + 1, (notes[:, END] / CHROMA_HOP_S).astype(int))
    for a, b, pitch, velocity in zip(first, last, notes[:, PITCH].astype(int), notes[:, VELOCITY], strict=True):
        chroma[pitch % 12, a:b] += velocity
    return chroma / np.maximum(np.linalg.norm(chroma, axis=0, keepdims=True), 1e-9)


def chroma_of_audio(audio: np.ndarray) -> np.ndarray:
    """(12, frames) constant-Q chroma of a recording, frames unit-norm."""
    import librosa

    hop = round(CHROMA_HOP_S * constants.SAMPLE_RATE / 128) * 128  # CQT wants multiples of 2**(octaves-1)
    chroma = librosa.feature.chroma_cqt(y=audio, sr=constants.SAMPLE_RATE, hop_length=hop)
    return chroma / np.maximum(np.linalg.norm(chroma, axis=0, keepdims=True), 1e-9)


@dataclass(frozen=True)
class Alignment:
    similarity: float  # mean cosine similarity of the aligned chroma frames
    start_s: float  # the aligned span in the piece
    end_s: float
    path: np.ndarray = field(repr=False)  # (steps, 2) aligned (query frame, piece frame), in time order

    def to_query_time(self, piece_s: np.ndarray) -> np.ndarray:
        """Times in the piece, warped onto the query's clock along the path."""
        return np.interp(piece_s / CHROMA_HOP_S, self.path[:, 1], self.path[:, 0]) * CHROMA_HOP_S


def align(query: np.ndarray, piece: np.ndarray) -> Alignment:
    """Subsequence DTW of a query's chroma (12, m) against a piece's (12, n): the best-fitting span."""
    # cosine distance of unit frames; silent (all-zero) frames are simply far from everything
    cost, path = _subsequence_dtw()(np.ascontiguousarray(1.0 - query.T @ piece))
    start, end = int(path[-1, 1]), int(path[0, 1])  # the path runs backwards, from the span's last frame
    return Alignment(1.0 - cost / query.shape[1], start * CHROMA_HOP_S, (end + 1) * CHROMA_HOP_S, path[::-1])


@functools.cache
def _subsequence_dtw():
    """The compiled kernel (numba, imported on first use): (cost (m, n)) -> (the best end's accumulated
    cost, its path backwards as (query frame, piece frame) rows). Exactly librosa.sequence.dtw(C=cost,
    subseq=True, backtrack=True) with its default steps (the same float64 sums, the same ties:
    diagonal, then along the piece, then along the query), 3-5 times faster: a 10 s query against a
    40 s piece 0.19 ms against librosa's 0.64, against a 400 s piece 1.8 ms against 9.1 (one core)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def kernel(cost):
        m, n = cost.shape
        step = np.zeros((m, n), np.int8)  # 0 diagonal, 1 along the piece, 2 along the query
        above, row = np.empty(n), np.empty(n)  # accumulated cost of the previous query frame, this one
        for j in range(n):  # a span may start anywhere in the piece
            row[j] = cost[0, j]
            if j and row[j - 1] + cost[0, j] < row[j]:
                row[j] = row[j - 1] + cost[0, j]
                step[0, j] = 1
        for i in range(1, m):
            above, row = row, above
            row[0] = above[0] + np.float64(cost[i, 0])
            step[i, 0] = 2
            for j in range(1, n):
                c = np.float64(cost[i, j])
                best, s = above[j - 1] + c, 0
                if row[j - 1] + c < best:
                    best, s = row[j - 1] + c, 1
                if above[j] + c < best:
                    best, s = above[j] + c, 2
                row[j], step[i, j] = best, s
        i, j = m - 1, int(np.argmin(row))
        path = np.empty((m + n, 2), np.int64)
        path[0, 0], path[0, 1], length = i, j, 1
        while i > 0:
            s = step[i, j]
            i, j = i - (s != 1), j - (s != 2)
            path[length, 0], path[length, 1] = i, j
            length += 1
        return row[path[0, 1]], path[:length]

    return kernel


def is_recording(item: dict) -> bool:
    return Path(item["path"]).suffix.lower() in constants.AUDIO_SUFFIXES


# Queries ----------------------------------------------------------------------------------------


@dataclass
class Query:
    """What is being matched: a recording, a score, or both once one is derived from the other."""

    name: str
    duration_s: float
    kind: str = "recording"  # or "score" (MIDI, MusicXML…)
    audio: np.ndarray | None = None
    notes: np.ndarray | None = None  # `note_rows`: [start_s, end_s, pitch, velocity]
    _cache: dict = field(default_factory=dict, repr=False)  # windows and chroma, computed once

    def sound(self) -> np.ndarray:
        if self.audio is None:
            import pretty_midi

            from pianoapp.io.midi import notes_to_midi
            from pianoapp.io.render import render

            played = [pretty_midi.Note(int(v), int(p), s, e) for s, e, p, v in self.notes.tolist()]
            self.audio = render(notes_to_midi(played))
        return self.audio

    def score(self) -> np.ndarray:
        if self.notes is None:
            from pianoapp.io.midi import piano_notes
            from pianoapp.io.transcribe import transcribe

            self.notes = note_rows(piano_notes(transcribe(self.audio)))
        return self.notes

    def windows(self, tower: str, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        if tower not in self._cache:
            self._cache[tower] = (audio_windows(self.sound(), model) if tower == "audio"
                                  else note_windows(self.score(), model))
        return self._cache[tower]

    def chromas(self) -> list[np.ndarray]:
        """The query's audio chroma and, when it has notes, their chroma."""
        if "chroma" not in self._cache:
            notes = self.score()
            self._cache["chroma"] = [chroma_of_audio(self.sound())] + ([chroma_of_notes(notes)] if len(notes) else [])
        return self._cache["chroma"]


_recent: OrderedDict[str, Query] = OrderedDict()  # the app shows a match right after making it
_recent_lock = threading.Lock()
RECENT_QUERIES = 4


def read_query(path: str | os.PathLike) -> Query:
    """A recording or MIDI/score file as a query; bad, silent, empty or too-short files are refused
    with one sentence. The last few are kept, with what was derived from them."""
    from pianoapp.io.files import check_file

    path = check_file(path)
    key = hashlib.sha256(path.read_bytes()).hexdigest() + path.suffix.lower()
    with _recent_lock:
        if key in _recent:
            _recent.move_to_end(key)
            return _recent[key]
    query = _read_query(path)
    with _recent_lock:
        _recent[key] = query
        while len(_recent) > RECENT_QUERIES:
            _recent.popitem(last=False)
    return query


def _read_query(path: Path) -> Query:
    from pianoapp.io.files import file_kind

    if file_kind(path) == "audio":
        from pianoapp.io.audio import load_audio

        audio = load_audio(path)
        query = Query(path.name, audio.size / constants.SAMPLE_RATE, audio=audio)
    else:
        from pianoapp.io.midi import piano_notes, read_midi

        notes = note_rows(piano_notes(read_midi(path)))
        query = Query(path.name, float(notes[:, END].max()), "score", notes=notes)
    if query.duration_s < SEGMENT_SECONDS:
        raise BadInputError(f"{path.name} is {query.duration_s:.1f} s long; matching needs at least "
                            f"{SEGMENT_SECONDS:g} s of music.")
    return query


# Matching ---------------------------------------------------------------------------------------


def shortlist(query_windows: np.ndarray, windows: Windows, items: np.ndarray, n: int) -> np.ndarray:
    """The n items whose windows fit the query's best: each item's best similarity to each query
    window, normalised by the item's cohort statistics, averaged over the query's windows."""
    stats = windows.cohort[items]
    fit = (windows.best_similarities(query_windows, items) - stats[:, 0]) / stats[:, 1]
    return items[np.argsort(-fit.mean(axis=0), kind="stable")[:n]]


def rank(query: Query, index: Index, *, k: int = 10, model: torch.nn.Module | None = None) -> list[dict]:
    """The k indexed items the query is most likely from, best first, each with its score and the
    aligned span (`start_s`, `end_s`) in that item."""
    model = model or matcher_model()
    windows = index.windows
    recordings = np.array([is_recording(item) for item in index.items], bool)
    candidates = []
    # The audio tower meets MIDI items, the MIDI tower meets recordings: the pairs the matcher learned.
    has_windows = np.bincount(windows.owner, minlength=len(index.items)) > 0
    for tower, rows in (("audio", np.flatnonzero(~recordings & has_windows)),
                        ("midi", np.flatnonzero(recordings & has_windows))):
        if not len(rows):
            continue
        embeddings, _ = query.windows(tower, model)
        if len(embeddings):  # a transcription may find no notes
            candidates += shortlist(embeddings, windows, rows, max(SHORTLIST, k)).tolist()
    chromas = query.chromas()

    def fits_of(row: int) -> list[Alignment]:
        piece = windows.chroma_of(row)
        return [align(chroma, piece) for chroma in chromas]

    hits = []
    with ThreadPoolExecutor(torch.get_num_threads()) as pool:  # the DTW kernel runs without the GIL
        aligned = list(pool.map(fits_of, candidates))
    for row, fits in zip(candidates, aligned, strict=True):
        where = fits[-1]  # the notes' alignment is the sharper one when there are notes
        item = index.items[row]
        hits.append({**_public(item), "score": round(float(np.mean([f.similarity for f in fits])), 4),
                     "start_s": round(where.start_s, 2), "end_s": round(where.end_s, 2)})
    hits.sort(key=lambda h: -h["score"])
    return hits[:k]


def _public(item: dict) -> dict:
    return {key: item.get(key) for key in ("path", "title", "composer", "collection", "key", "duration_s", "id")}


def same_piece(a: dict, b: dict) -> bool:
    """Two hits of one piece (its MIDI and a recording, say), as far as their metadata tells."""
    return (a.get("title"), a.get("composer")) == (b.get("title"), b.get("composer"))


def margin(hits: list[dict]) -> float:
    """How far the best hit's score stands above the best hit of another piece (hits best first);
    the best score itself when no other piece is listed."""
    others = [h["score"] for h in hits[1:] if not same_piece(h, hits[0])]
    return hits[0]["score"] - (others[0] if others else 0.0)


def no_match_threshold(model_dir: Path = MATCHER_DIR) -> float | None:
    """The `margin` below which the best hit is not a match, calibrated on validation; None when
    uncalibrated."""
    path = Path(model_dir) / CALIBRATION
    if not path.is_file():
        return None
    return float(json.loads(path.read_text())["no_match_below"])


def match(path: str | os.PathLike, *, index_dir: str | os.PathLike | None = None, k: int = 10,
          with_user_index: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """`pianoapp match`: {"results": hits, best first, each with "match" (the best hit's piece, when
    its `margin` reaches the threshold), "no_match", "margin", "threshold", "query": {"name",
    "duration_s"}}.

    Searches the index named (default: the demo index) and, with `with_user_index`, the user's
    library too when it was built with matching windows."""
    from pianoapp.services.library import open_indexes

    if k < 1:
        raise BadInputError(f"-k must be at least 1, got {k}.")
    indexes = open_indexes(index_dir, with_user_index)
    first = indexes[0]
    rebuild = f"rebuild it with `pianoapp index build PATH... --out {first.folder}`"
    if first.windows is None:
        raise BadInputError(f"The index at {first.folder} was built without matching windows; {rebuild}.")
    usable = [index for index in indexes if index.windows is not None and index.windows.space == windows_space()]
    if first not in usable:
        raise BadInputError(f"The index at {first.folder} was built with another matcher checkpoint; {rebuild}.")
    if progress:
        progress("reading the query")
    query = read_query(path)
    # Noise's flat chroma fits dense music well; a recording with no notes has nothing to match.
    if query.kind == "recording" and not len(query.score()):
        raise BadInputError(f"No piano notes were heard in {query.name} (noise, speech or another sound?), "
                            "so nothing can match it.")
    if progress:
        progress("matching")
    # The margin needs the runner-up even when k is 1; the candidates are aligned either way.
    hits = sorted((hit for index in usable for hit in rank(query, index, k=max(k, MARGIN_HITS))),
                  key=lambda h: -h["score"])
    threshold, stands_out = no_match_threshold(), round(margin(hits), 4)
    for hit in hits:
        hit["match"] = threshold is None or (same_piece(hit, hits[0]) and stands_out >= threshold)
    hits = hits[:k]
    return {"results": hits, "no_match": not any(h["match"] for h in hits), "margin": stands_out,
            "threshold": threshold, "query": {"name": query.name, "duration_s": round(query.duration_s, 2)}}


# Showing a match -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpanPreview:
    audio_path: Path  # the matched span of the piece: rendered from its notes, or cut from its recording
    figure: object  # one piano roll: the query's notes (a recording's transcription) and the span's,
    # warped onto the query's clock along the alignment, in two colours


def span_preview(hit: dict, query_path: str | os.PathLike, *, index_dir: str | os.PathLike | None = None,
                 with_user_index: bool = False) -> SpanPreview:
    """What the Match tab shows for one hit of `match` (same indexes): the piece's matched span to
    play, and its notes aligned with the query's, in one piano roll."""
    import pretty_midi

    from pianoapp.io.audio import load_audio, write_audio
    from pianoapp.io.files import file_kind
    from pianoapp.io.midi import notes_to_midi, piano_notes, read_midi
    from pianoapp.io.render import render
    from pianoapp.io.transcribe import transcribe
    from pianoapp.pianoroll import piano_roll
    from pianoapp.services.library import locate, open_indexes
    from pianoapp.services.preview import clock, scratch_dir

    query = read_query(query_path)
    found = [(index, row) for index in open_indexes(index_dir, with_user_index) if index.windows is not None
             for row, item in enumerate(index.items) if item["id"] == hit["id"]]
    if not found:
        raise BadInputError(f"{hit['title']} is no longer in the index; match again.")
    index, row = found[0]
    fit = align(query.chromas()[-1], index.windows.chroma_of(row))
    file = locate(hit["path"])
    start, end = fit.start_s, fit.end_s
    if file_kind(file) == "audio":
        audio = load_audio(file, max_seconds=float("inf"))[round(start * constants.SAMPLE_RATE):
                                                            round(end * constants.SAMPLE_RATE)]
        span = piano_notes(transcribe(audio))
        for n in span:
            n.start, n.end = n.start + start, n.end + start
    else:
        span = [n for n in piano_notes(read_midi(file, max_seconds=float("inf"))) if start <= n.start < end]
        played = [pretty_midi.Note(n.velocity, n.pitch, n.start - start, min(n.end, end) - start) for n in span]
        audio = render(notes_to_midi(played)) if played else np.zeros(constants.SAMPLE_RATE, np.float32)
    out = scratch_dir("matches") / f"{hit['id']}-{start:.1f}-{end:.1f}.wav"
    write_audio(out, audio, constants.SAMPLE_RATE)
    starts = fit.to_query_time(np.array([n.start for n in span]))
    ends = fit.to_query_time(np.array([n.end for n in span]))
    matched = [pretty_midi.Note(n.velocity, n.pitch, float(a), float(max(b, a + 0.05)))
               for n, a, b in zip(span, starts, ends, strict=True)]
    both = pretty_midi.PrettyMIDI()
    # the matched span first, so the query's own notes are drawn on top of it
    for name, notes in ((f"{hit['title']}, {clock(start)}–{clock(end)}", matched),
                        (f"your {query.kind}",
                         [pretty_midi.Note(int(v), int(p), a, b) for a, b, p, v in query.score().tolist()])):
        track = pretty_midi.Instrument(0, name=name)
        track.notes = notes
        both.instruments.append(track)
    return SpanPreview(out, piano_roll(both, by_track=True))
