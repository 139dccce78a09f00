"""Rendering speed per soundfont, as a multiple of real time, against pretty_midi's own FluidSynth call.

    python bench/render_speed.py [--per-collection 2] [--data ../shared/data]

Renders whole pieces (the first --per-collection items of ASAP performances, POP909 and Nottingham)
at 24 kHz with every installed soundfont. Prints, per soundfont: the one-off soundfont load,
`pianoapp.io.render.render` speed with the soundfont loaded (every render after the first) and
including the load (a process's first render), the baseline `PrettyMIDI.fluidsynth(fs, synthesizer=path)`
timed in the same run (it loads the soundfont for each track of each piece), and the ratio.
"""

import argparse
import time
from pathlib import Path

from pianoapp import constants
from pianoapp.data.corpora import load_items
from pianoapp.io import render as rd
from pianoapp.io.midi import read_midi


def pick(per_collection: int, data_dir: Path):
    picked = []
    for name in ("asap", "pop909", "nottingham"):
        items = [it for it in load_items(name, data_dir) if it.meta.get("kind") != "score"]
        picked += items[:per_collection]
    return picked


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=constants.DEFAULT_DATA_DIR)
    ap.add_argument("--per-collection", type=int, default=2)
    args = ap.parse_args()
    sr = constants.SAMPLE_RATE
    midis = [read_midi(it.path, max_seconds=float("inf")) for it in pick(args.per_collection, args.data)]
    print(f"{len(midis)} pieces, {sum(pm.get_end_time() for pm in midis) / 60:.1f} min of music, {sr} Hz")
    for name, path in rd.list_soundfonts().items():
        # The baseline goes first: FluidSynth shares loaded samples between synthesizers in a process,
        # so once ours holds the soundfont the baseline's reloads would be nearly free.
        t = time.perf_counter()
        base_audio_s = sum(pm.fluidsynth(fs=sr, synthesizer=str(path)).size for pm in midis) / sr
        base_s = time.perf_counter() - t
        t = time.perf_counter()
        rd._soundfont(path)  # the load a process pays once per soundfont
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        audio_s = sum(rd.render(pm, sr=sr, soundfont=name).size for pm in midis) / sr
        ours_s = time.perf_counter() - t
        ours, cold, base = audio_s / ours_s, audio_s / (ours_s + load_s), base_audio_s / base_s
        print(f"{name:18s} load {load_s:5.2f} s | render {ours:6.1f}x real time "
              f"({cold:6.1f}x with the load) | pretty_midi.fluidsynth {base:6.1f}x | ratio {ours / base:5.1f}x")


if __name__ == "__main__":
    main()
