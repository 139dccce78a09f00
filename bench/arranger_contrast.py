"""Does the reference change the arrangement? The same lead sheets arranged with the same seeds
under two contrasting style references, a sparse and a busy one, and under none.

    python bench/arranger_contrast.py [--sheets 24] MODEL_DIR...

References: the first segments of the POP909 test songs, their PIANO tracks' first 10 s rendered
clean as in training; "sparse" and "busy" are the ones at the 10th and 90th percentile of notes per
second. Lead sheets: `--sheets` other test segments (seeded), sheet i arranged with seed i under each
reference, the model told the style read from the reference's transcription as the app does. For
each accompaniment, its `Style`: notes per second, median pitch, and notes per onset (chords vs
single lines). A model that reads its reference moves each towards the reference's own value; the
figure is the paired difference busy − sparse over the sheets, with its standard error (sampling
alone, the same sheet under one reference with two seeds, gives the noise floor beside it).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dataclasses import asdict, fields

import numpy as np
import pretty_midi

from pianoapp.data.arrangement import ArrangementPairs, Style, load_songs
from pianoapp.data.sequences import array_to_notes
from pianoapp.services.arrange import arrange_sheet, load_arranger, reference_style
from pianoapp.train.arranger import reference_audio, render_references

STATS = tuple(f.name for f in fields(Style))


def texture(notes: list[pretty_midi.Note]) -> dict[str, float]:
    style = Style.of(notes)
    return asdict(style) if style else {"density": 0.0, "register": float("nan"), "poly": float("nan")}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    d = np.asarray(b) - np.asarray(a)
    d = d[np.isfinite(d)]
    return {"mean": round(float(d.mean()), 3), "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--sheets", type=int, default=24)
    args = parser.parse_args()
    pairs = ArrangementPairs(load_songs("test"))
    density = {j: texture(array_to_notes(pairs.piano(j)))["density"] for j in pairs.first_segments()}
    ordered = sorted(density, key=density.get)
    chosen = {"sparse": ordered[len(ordered) // 10], "busy": ordered[(9 * len(ordered)) // 10]}
    renders = render_references(pairs, set(chosen.values()))
    clips = {name: reference_audio(renders[j]) for name, j in chosen.items()}
    heard = {name: reference_style(clip) for name, clip in clips.items()}
    # The reference's own texture over the seconds the model hears.
    own = {name: texture([n for n in array_to_notes(pairs.piano(j)) if n.start < 10.0]) for name, j in chosen.items()}
    rng = np.random.default_rng(0)
    songs_used = {int(pairs.segments[j, 0]) for j in chosen.values()}
    candidates = [j for j in range(len(pairs)) if int(pairs.segments[j, 0]) not in songs_used]
    sheets = rng.choice(candidates, size=min(args.sheets, len(candidates)), replace=False).tolist()
    report = {"references": {name: {"segment": j, **{k: round(v, 3) for k, v in own[name].items()},
                                    "heard": heard[name] and heard[name].tokens()}
                             for name, j in chosen.items()}, "sheets": len(sheets), "models": {}}
    for model_dir in args.models:
        arranger, codec = load_arranger(model_dir)
        rows: dict[str, dict[str, list[float]]] = {c: {k: [] for k in STATS}
                                                  for c in ("sparse", "busy", "none", "sparse-reseeded")}
        for i, j in enumerate(sheets):
            sheet = pairs.pair(j).leadsheet
            for condition in rows:
                reference = condition.split("-")[0]
                clip, style = (None, None) if condition == "none" else (clips[reference], heard[reference])
                seed = i + (10_000 if condition.endswith("reseeded") else 0)
                stats = texture(arrange_sheet(arranger, codec, sheet, clip, style=style, seed=seed))
                for k in STATS:
                    rows[condition][k].append(stats[k])
        report["models"][model_dir] = {
            "means": {c: {k: round(float(np.nanmean(v)), 3) for k, v in by.items()} for c, by in rows.items()},
            "busy_minus_sparse": {k: paired(rows["sparse"][k], rows["busy"][k]) for k in STATS},
            "reseeded_minus_sparse": {k: paired(rows["sparse"][k], rows["sparse-reseeded"][k]) for k in STATS},
        }
        print(json.dumps({model_dir: report["models"][model_dir]}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
