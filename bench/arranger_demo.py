"""The Arrange tab's demo, over seeds: the demo tune under the ragtime and the gentle broken-chord
references, with the service's sampling and with neither bias.

    python bench/arranger_demo.py [--model models/arranger] [--bars 8] [--seeds 5]

Prints, per reference and sampling, the style heard in the reference, the accompaniment's note count
for each seed and its mean chord accuracy (`evaluate.arrangement.chord_accuracy`).
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from pianoapp import constants
from pianoapp.evaluate.arrangement import chord_accuracy
from pianoapp.services.arrange import (
    CHORD_BIAS,
    MELODY_BIAS,
    arrange_sheet,
    load_arranger,
    load_leadsheet,
    load_reference,
    reference_style,
)
from pianoapp.ui.arrange import DEMO_LEADSHEET

REFERENCES = ("joplin_maple_leaf_rag_opening.flac", "pedal_arpeggios.flac")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(constants.MODELS_DIR / "arranger"))
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    arranger, codec = load_arranger(args.model)
    sheet, _ = load_leadsheet(constants.ASSETS_DIR / DEMO_LEADSHEET, bars=args.bars)
    for name in REFERENCES:
        clip, _ = load_reference(constants.ASSETS_DIR / name)
        style = reference_style(clip)
        print(f"{name}: heard {style.describe()}")
        for label, biases in (("service", (CHORD_BIAS, MELODY_BIAS)), ("no biases", (0.0, 0.0))):
            counts, accuracy = [], []
            for seed in range(args.seeds):
                notes = arrange_sheet(arranger, codec, sheet, clip, style=style, seed=seed, chord_bias=biases[0],
                                      melody_bias=biases[1])
                counts.append(len(notes))
                accuracy.append(chord_accuracy(sheet.chords, notes))
            print(f"  {label:9s} notes {counts} (mean {np.mean(counts):.0f}), chord accuracy {np.nanmean(accuracy):.2f}")


if __name__ == "__main__":
    main()
