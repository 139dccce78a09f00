"""Calibrate matching for a matcher checkpoint and write the results beside it: the cohort (window
embeddings of 1,024 training segments, which shortlisting normalises against: cohort.npz), then the
"no match" threshold on the best hit's margin over the runner-up (`services.match.margin`) chosen on
the validation split (calibration.json).

    python bench/calibrate_match.py [--model models/matcher] [--queries 200]

Indexes built before a new cohort ask to be rebuilt (the cohort is part of their windows' space).

Queries are 10 s excerpts in the held-out soundfont with 20 dB noise (`pianoapp.evaluate.matching`):
excerpts of indexed pieces, and of pieces kept out of the index. The threshold maximises the F1 of
saying "match" (a correct top hit whose margin reaches it); the test split's precision and recall at it are
in `pianoapp eval matcher`.
"""

import argparse
import io
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from pianoapp.evaluate.matching import calibrate, cohort_embeddings, decision_quality, evaluate_matching
from pianoapp.io.files import write_atomic
from pianoapp.models.checkpoint import load_model
from pianoapp.services import match


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=match.MATCHER_DIR)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    model = load_model(args.model)
    cohort = cohort_embeddings(model)
    write_atomic(args.model / match.COHORT, lambda tmp: tmp.write_bytes(_npz_bytes(cohort)))
    for cached in (match.cohort, match.windows_space):
        cached.cache_clear()
    report = evaluate_matching(model, split="val", n_queries=args.queries, baseline=False)
    margins = report["positive_margins"], report["positive_correct"], report["negative_margins"]
    threshold = calibrate(*margins)
    quality = decision_quality(*margins, threshold)
    doc = {"no_match_below": round(threshold, 4), "statistic": "margin", "chosen_on": "val", **quality,
           "separation_auc": report["separation_auc"], "queries": report["queries"], "negatives": report["negatives"],
           "command": "python bench/calibrate_match.py" + (f" --queries {args.queries}" if args.queries != 200 else "")}
    (args.model / match.CALIBRATION).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
