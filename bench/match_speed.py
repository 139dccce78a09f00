"""Matching speed: a 10 s recording against a 5,000-piece index, and index building from MIDI.

    python bench/match_speed.py [--pieces 250] [--copies 20] [--queries 10] [--baseline-queries 3]

The index holds `pieces` real test-split pieces (whole, from their MIDI), each added `copies` times
under different ids, so the search sees 5,000 pieces of real length and content; only speed is
measured here (accuracy: `pianoapp eval matcher`). Queries are 10 s excerpts rendered in the held-out
soundfont with 20 dB noise; their time includes everything `pianoapp match` does after reading the
file: transcription, chroma, window embeddings, the FAISS shortlist and DTW. The baseline, chroma
subsequence DTW against every piece, runs on a few of the same queries in the same process.
"""

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np

from pianoapp.data.segments import matcher_pieces
from pianoapp.data.sequences import END
from pianoapp.evaluate.matching import chroma_dtw_rank, excerpts, seconds_rows
from pianoapp.index import Index
from pianoapp.services.match import Query, item_timeline, matcher_model, new_windows, rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=250)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--baseline-queries", type=int, default=3)
    args = parser.parse_args()
    model = matcher_model()
    pieces = [seconds_rows(p) for p in matcher_pieces("test") if len(p)][: args.pieces]
    music_s = sum(float(p[:, END].max()) for p in pieces)

    t = time.perf_counter()
    timelines = [item_timeline("midi", notes=p, model=model) for p in pieces]
    build_s = time.perf_counter() - t
    index = Index.create("/nonexistent", "bench", 1, windows=new_windows())
    items = [{"id": f"{c}-{r}", "path": f"{c}-{r}.mid", "title": str(r), "duration_s": float(p[:, END].max())}
             for c in range(args.copies) for r, p in enumerate(pieces)]
    index.add(items, np.zeros((len(items), 1), np.float32), timelines * args.copies)

    queries = excerpts(pieces, np.arange(len(pieces)), n=args.queries, seconds=10.0, seed=0)
    rank(Query("warm-up", 10.0, audio=queries[0].query.audio), index, k=10, model=model)  # first-call costs
    ours = []
    for ex in queries:
        t = time.perf_counter()
        rank(Query("q", 10.0, audio=ex.query.audio), index, k=10, model=model)
        ours.append(time.perf_counter() - t)
    chromas = [index.windows.chroma_of(row) for row in range(len(index))]
    baseline = []
    for ex in queries[: args.baseline_queries]:
        t = time.perf_counter()
        chroma_dtw_rank(ex.query.audio, chromas)
        baseline.append(time.perf_counter() - t)
    report = {
        "pieces_in_index": len(index), "windows": len(index.windows), "threads": os.environ["OMP_NUM_THREADS"],
        "load_average": os.getloadavg()[0],
        "index_build_realtime_x": round(music_s / build_s, 1), "music_hours_embedded": round(music_s / 3600, 2),
        "match_10s_median_s": round(float(np.median(ours)), 3), "match_10s_p95_s": round(float(np.quantile(ours, 0.95)), 3),
        "baseline_chroma_dtw_median_s": round(float(np.median(baseline)), 2),
        "speed_ratio": round(float(np.median(baseline) / np.median(ours)), 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
