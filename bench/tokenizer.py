"""Tokenizer speed and duration clamping on 100 files per collection.

    python bench/tokenizer.py [--data ../shared/data] [--files 100]

Prints per collection: read + piano_notes, encode and decode time per file, and the share of notes
whose duration exceeds the tokenizer's cap (those are clamped).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from pianoapp import constants
from pianoapp.io.midi import piano_notes, read_midi
from pianoapp.tokenizer import Tokenizer


def spread(paths, k: int) -> list[Path]:
    paths = sorted(paths)
    return [paths[i * len(paths) // k] for i in range(min(k, len(paths)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=constants.DEFAULT_DATA_DIR)
    ap.add_argument("--files", type=int, default=100)
    args = ap.parse_args()
    tok = Tokenizer()
    cap_s = tok.config.max_duration_ms / 1000
    sets = {
        "pop909": spread(args.data.glob("pop909/*/*.mid"), args.files),
        "asap": spread((p for p in args.data.glob("asap/**/*.mid") if p.name != "midi_score.mid"), args.files),
        "nottingham": spread(args.data.glob("nottingham/*.mid"), args.files),
    }
    for name, files in sets.items():
        t = time.perf_counter()
        notes = [piano_notes(read_midi(f, max_seconds=float("inf"))) for f in files]
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        ids = [tok.encode(n) for n in notes]
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        for i in ids:
            tok.decode(i)
        t_dec = time.perf_counter() - t
        durations = np.concatenate([[x.end - x.start for x in n] for n in notes])
        print(f"{name}: {len(files)} files, {durations.size} notes, {sum(map(len, ids))} tokens | "
              f"read+piano_notes {t_read / len(files) * 1e3:.1f} ms/file | encode {t_enc / len(files) * 1e3:.2f} "
              f"ms/file ({durations.size / t_enc / 1e6:.2f} M notes/s) | decode {t_dec / len(files) * 1e3:.2f} ms/file | "
              f"notes over {cap_s:.0f} s (clamped): {(durations > cap_s).mean():.3%}")


if __name__ == "__main__":
    main()
