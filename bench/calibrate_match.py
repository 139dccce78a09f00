"""Choose the matcher's "no match" threshold on the validation split and write it beside the model.

    python bench/calibrate_match.py [--model models/matcher] [--queries 200]

Queries are 10 s excerpts in the held-out soundfont with 20 dB noise (`pianoapp.evaluate.matching`):
excerpts of indexed pieces, and of pieces kept out of the index. The threshold maximises the F1 of
saying "match" (a correct top hit at or above it); the test split's precision and recall at it are
in `pianoapp eval matcher`.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pianoapp.evaluate.matching import calibrate, decision_quality, evaluate_matching
from pianoapp.models.checkpoint import load_model
from pianoapp.services.match import CALIBRATION, MATCHER_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MATCHER_DIR)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    report = evaluate_matching(load_model(args.model), split="val", n_queries=args.queries, baseline=False)
    scores = report["positive_scores"], report["positive_correct"], report["negative_scores"]
    threshold = calibrate(*scores)
    quality = decision_quality(*scores, threshold)
    doc = {"no_match_below": round(threshold, 4), "chosen_on": "val", **quality,
           "queries": report["queries"], "negatives": report["negatives"],
           "command": "python bench/calibrate_match.py" + (f" --queries {args.queries}" if args.queries != 200 else "")}
    (args.model / CALIBRATION).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
