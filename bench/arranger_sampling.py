"""How should the arranger sample? `pianoapp eval arranger`'s protocol on validation segments, once
per setting of the temperature, the chord bias and the melody bias (min-p fixed at the service's
MIN_P).

    python bench/arranger_sampling.py [--model models/arranger] [--segments 24] [--settings 0.5:4:0 ...]

Each setting is TEMPERATURE:CHORD_BIAS[:MELODY_BIAS] (`services.arrange.arrange_sheet`; a missing
melody bias is 0). Prints, per setting, the
model's melody preservation, chord accuracy, groove and pitch entropy (4 bars) with the segment's own
reference, and its style retrieval mean rank; the rule-based arranger's, from the first run, as the
baseline, and the true PIANO track's as the upper reference. The service keeps the setting that
follows the chords best without losing the melody or the groove.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pianoapp import constants
from pianoapp.services.arrange import evaluate_arranger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(constants.MODELS_DIR / "arranger"))
    parser.add_argument("--segments", type=int, default=24)
    parser.add_argument("--settings", nargs="+", default=["0.5:0", "0.5:2", "0.5:4", "0.5:4:2", "0.5:4:4"])
    args = parser.parse_args()
    rows = {}
    for setting in args.settings:
        temperature, chord, melody = ([float(x) for x in setting.split(":")] + [0.0])[:3]
        report = evaluate_arranger(args.model, split="val", n_segments=args.segments, temperature=temperature,
                                   chord_bias=chord, melody_bias=melody)
        ranks = report["style_retrieval"]["systems"]
        if not rows:
            rows["true PIANO track"] = {**report["systems"]["true"], "style_mean_rank": float("nan")}
            rows["rule-based baseline"] = {**report["systems"]["baseline"], "style_mean_rank": ranks["baseline"]["mean_rank"]}
        name = f"T {temperature:g}, chord {chord:g}, melody {melody:g}"
        rows[name] = {**report["systems"]["model"], "style_mean_rank": ranks["model"]["mean_rank"]}
        print(json.dumps({setting: rows[name]}), file=sys.stderr, flush=True)
    print(f"{args.segments} val segments, own reference, min-p fixed")
    print(f"{'system':30s} {'melody':>7s} {'chords':>7s} {'groove':>7s} {'entropy':>8s} {'style rank':>11s}")
    for name, r in rows.items():
        print(f"{name:30s} {r['melody_preservation']:7.3f} {r['chord_accuracy']:7.3f} {r['groove']:7.3f} "
              f"{r['entropy_4bar']:8.2f} {r['style_mean_rank']:11.1f}")


if __name__ == "__main__":
    main()
