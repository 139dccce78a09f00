"""Whole-piece matching, as `pianoapp match` does it: which piece of a collection a recorded excerpt
comes from, and where it starts.

Protocol. Every readable piece of a split (ASAP performances, POP909, Nottingham; whole pieces) is
indexed from its MIDI, as `pianoapp index build` would. Queries are seeded excerpts (10 s by default)
of indexed pieces, rendered with a soundfont the matcher never heard in training (TimGM6mb) and
mixed with noise at 20 dB SNR. For each query: the rank of its piece, the error of the returned
start time, the time taken. Negatives are excerpts of pieces kept out of the index: they set and
test the "no match" threshold.

Baseline on the same queries: chroma subsequence DTW of the query's audio against every piece's
notes (`chroma_dtw_rank`), the classical way to find a recording's score.
"""

import time
from dataclasses import dataclass

import numpy as np

from pianoapp import constants
from pianoapp.data.augment import add_noise
from pianoapp.data.segments import HELD_OUT_SOUNDFONT, matcher_pieces
from pianoapp.data.sequences import END, PITCH, START, VELOCITY
from pianoapp.evaluate.matcher import log_part
from pianoapp.index import Index
from pianoapp.services.match import (
    MARGIN_HITS,
    Query,
    align,
    chroma_of_audio,
    chroma_of_notes,
    item_timeline,
    margin,
    no_match_threshold,
    rank,
)


@dataclass(frozen=True)
class Excerpt:
    piece: int  # row in the pieces list
    start_s: float
    query: Query


def seconds_rows(piece_ms: np.ndarray) -> np.ndarray:
    """A cached piece ([start_ms, end_ms, pitch, velocity] ints) as `note_rows` floats in seconds."""
    notes = piece_ms.astype(np.float64)
    notes[:, [START, END]] /= 1000
    return notes


def excerpts(pieces: list[np.ndarray], rows: np.ndarray, *, n: int, seconds: float, seed: int,
             soundfont: str = HELD_OUT_SOUNDFONT, snr_db: float | None = 20.0) -> list[Excerpt]:
    """n seeded excerpts of the pieces at `rows` (those at least `seconds` + 1 s long), rendered."""
    import pretty_midi

    from pianoapp.io.midi import notes_to_midi
    from pianoapp.io.render import render

    rng = np.random.default_rng(seed)
    long_enough = [r for r in rows if pieces[r][:, END].max() >= seconds + 1]
    out = []
    for r in rng.choice(long_enough, size=min(n, len(long_enough)), replace=False):
        notes = pieces[r]
        start = float(rng.uniform(0, notes[:, END].max() - seconds))
        inside = notes[(notes[:, START] >= start) & (notes[:, START] < start + seconds)]
        played = [pretty_midi.Note(int(v), int(p), s - start, min(e, start + seconds) - start)
                  for s, e, p, v in inside[:, [START, END, PITCH, VELOCITY]].tolist()]
        audio = render(notes_to_midi(played), soundfont=soundfont)[: round(seconds * constants.SAMPLE_RATE)]
        if snr_db is not None:
            audio = add_noise(audio, rng, snr_db=snr_db)
        out.append(Excerpt(int(r), start, Query(f"excerpt {r}@{start:.1f}", seconds, audio=audio)))
    return out


def piece_index(pieces: list[np.ndarray], rows: np.ndarray, model) -> Index:
    """An in-memory index of the pieces at `rows`, windows only (item ids are the piece rows)."""
    from pianoapp.services.match import new_windows

    index = Index.create("/nonexistent", "eval", 1, windows=new_windows())
    items = [{"id": str(r), "path": f"piece-{r}.mid", "title": str(r), "duration_s": float(pieces[r][:, END].max())}
             for r in rows]
    windows = [item_timeline("midi", notes=pieces[r], model=model) for r in rows]
    index.add(items, np.zeros((len(items), 1), np.float32), windows)
    return index


def chroma_dtw_rank(query_audio: np.ndarray, piece_chromas: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: subsequence DTW of the query's audio chroma against every piece's note chroma;
    (similarity per piece, start time per piece)."""
    query = chroma_of_audio(query_audio)
    fits = [align(query, chroma) for chroma in piece_chromas]
    return np.array([f.similarity for f in fits]), np.array([f.start_s for f in fits])


def evaluate_matching(model, *, data_dir=None, split: str = "test", n_queries: int = 100, seconds: float = 10.0,
                      seed: int = 0, held_out_fraction: float = 0.2, snr_db: float | None = 20.0,
                      baseline: bool = True, max_pieces: int = 0) -> dict:
    """Rank, location and timing of whole-piece matching on `split`, against the chroma-DTW baseline.

    A seeded `held_out_fraction` of the pieces stays out of the index: excerpts of those are the
    negatives for the "no match" threshold. Returns JSON-ready numbers plus, for calibrating it, each
    query's `services.match.margin` ("positive_margins", "negative_margins") and whether a positive's
    best hit was its piece ("positive_correct"); with a calibrated threshold, its precision and recall
    ("no_match").
    """
    pieces = [seconds_rows(p) for p in matcher_pieces(split, data_dir=data_dir, max_items=max_pieces) if len(p)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pieces))
    n_out = round(held_out_fraction * len(pieces))
    indexed, outside = np.sort(order[n_out:]), np.sort(order[:n_out])
    t0 = time.perf_counter()
    index = piece_index(pieces, indexed, model)
    index_s = time.perf_counter() - t0
    positives = excerpts(pieces, indexed, n=n_queries, seconds=seconds, seed=seed + 1, snr_db=snr_db)
    negatives = excerpts(pieces, outside, n=max(1, n_queries // 2), seconds=seconds, seed=seed + 2, snr_db=snr_db)

    ranks, errors, best, margins, correct, latency = [], [], [], [], [], []
    for ex in positives:
        t = time.perf_counter()
        hits = rank(ex.query, index, k=10, model=model)
        latency.append(time.perf_counter() - t)
        found = [h["id"] for h in hits]
        r = found.index(str(ex.piece)) if str(ex.piece) in found else len(found)
        ranks.append(r)
        if r == 0:
            errors.append(abs(hits[0]["start_s"] - ex.start_s))
        best.append(hits[0]["score"])
        margins.append(margin(hits))
        correct.append(r == 0)
    negative_hits = [rank(ex.query, index, k=MARGIN_HITS, model=model) for ex in negatives]
    negative_margins = [margin(hits) for hits in negative_hits]
    ranks = np.array(ranks)
    music_s = sum(float(pieces[r][:, END].max()) for r in indexed)
    report = {
        "split": split, "pieces_indexed": len(indexed), "pieces_held_out": len(outside),
        "windows": len(index.windows), "queries": len(positives), "negatives": len(negatives),
        "query_seconds": seconds, "soundfont": HELD_OUT_SOUNDFONT, "snr_db": snr_db,
        "R@1": float(np.mean(ranks < 1)), "R@5": float(np.mean(ranks < 5)), "R@10": float(np.mean(ranks < 10)),
        "MRR": float(np.mean(np.where(ranks < 10, 1 / (ranks + 1), 0))),
        "median_start_error_s": float(np.median(errors)) if errors else None,
        "median_query_s": float(np.median(latency)), "index_realtime_x": music_s / index_s,
        "positive_margins": margins, "positive_correct": correct, "negative_margins": negative_margins,
        # How well each statistic tells right answers from wrong ones, whatever the threshold.
        "separation_auc": {
            "margin": separation_auc(margins, correct, negative_margins),
            "score": separation_auc(best, correct, [hits[0]["score"] for hits in negative_hits]),
        },
    }
    threshold = no_match_threshold()
    if threshold is not None:
        report["no_match"] = {"threshold": threshold,
                              **decision_quality(margins, correct, negative_margins, threshold)}
    log_part("matching", report)
    if baseline:
        report["baseline"] = _baseline(pieces, indexed, positives)
        log_part("matching baseline", report["baseline"])
    return report


def cohort_embeddings(model, *, n: int = 1024, seed: int = 0, max_pieces: int = 800) -> dict[str, np.ndarray]:
    """Unit audio and MIDI window embeddings of n seeded training segments (both training soundfonts,
    written tempo): the unrelated music an item's best similarity is normalised against."""
    from pianoapp.data.segments import TRAIN_SOUNDFONTS, Segments, render_pieces
    from pianoapp.evaluate.matcher import embed_segments

    pieces = matcher_pieces("train", max_items=max_pieces)
    segments = Segments(render_pieces(pieces, soundfonts=TRAIN_SOUNDFONTS, per_piece=1, seconds=20.0))
    rows = np.random.default_rng(seed).choice(len(segments), size=min(n, len(segments)), replace=False)
    audio, midi = embed_segments(model, [segments[int(j)] for j in rows])
    return {tower: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
            for tower, x in (("audio", audio), ("midi", midi))}


def decision_quality(positive: list[float], correct: list[bool], negative: list[float], threshold: float) -> dict:
    """Precision and recall of saying "match" at `threshold` of a statistic (the `margin`): a positive
    query counts as found when its top hit is its piece and reaches the threshold; any other query
    that reaches it, a wrong answer (a negative query, or a positive with a wrong top hit)."""
    positive, correct, negative = np.array(positive), np.array(correct, bool), np.array(negative)
    right = np.sum((positive >= threshold) & correct)
    said = np.sum(positive >= threshold) + np.sum(negative >= threshold)
    return {"precision": float(right / said) if said else 1.0, "recall": float(right / len(positive)),
            "f1": float(2 * right / (said + len(positive))) if said + len(positive) else 0.0}


def separation_auc(positive: list[float], correct: list[bool], negative: list[float]) -> float:
    """The chance that a right answer (a positive query whose top hit is its piece) has a higher
    statistic than a wrong one (a negative query, or a positive with a wrong top hit); ties count half."""
    correct = np.array(correct, bool)
    right = np.array(positive)[correct]
    wrong = np.concatenate([np.array(positive)[~correct], negative])
    if not len(right) or not len(wrong):
        return float("nan")
    above = (right[:, None] > wrong[None, :]).mean() + 0.5 * (right[:, None] == wrong[None, :]).mean()
    return float(above)


def calibrate(positive: list[float], correct: list[bool], negative: list[float]) -> float:
    """The threshold with the best F1 of `decision_quality`, midway between neighbouring scores."""
    scores = np.unique(np.concatenate([positive, negative]))
    cuts = np.concatenate([[scores[0] - 1e-3], (scores[:-1] + scores[1:]) / 2, [scores[-1] + 1e-3]])
    f1 = [decision_quality(positive, correct, negative, t)["f1"] for t in cuts]
    return float(cuts[int(np.argmax(f1))])


def _baseline(pieces: list[np.ndarray], indexed: np.ndarray, positives: list[Excerpt]) -> dict:
    chromas = [chroma_of_notes(pieces[r]) for r in indexed]
    ranks, errors, latency = [], [], []
    for ex in positives:
        t = time.perf_counter()
        similarity, starts = chroma_dtw_rank(ex.query.audio, chromas)
        latency.append(time.perf_counter() - t)
        truth = int(np.searchsorted(indexed, ex.piece))
        r = int(np.sum(similarity > similarity[truth]))
        ranks.append(r)
        if r == 0:
            errors.append(abs(starts[truth] - ex.start_s))
    ranks = np.array(ranks)
    return {"method": "chroma subsequence DTW against every piece",
            "R@1": float(np.mean(ranks < 1)), "R@5": float(np.mean(ranks < 5)), "R@10": float(np.mean(ranks < 10)),
            "MRR": float(np.mean(np.where(ranks < 10, 1 / (ranks + 1), 0))),
            "median_start_error_s": float(np.median(errors)) if errors else None,
            "median_query_s": float(np.median(latency))}
