"""Note-onset F1 of `transcribe` on rendered validation pieces: basic-pitch's settings vs Pianoapp's.

    python bench/transcription_f1.py [--pieces 20] [--seconds 30] [--data ../shared/data] [--grid]

Takes the first --seconds of --pieces validation pieces (one per piece, ASAP performances, POP909 and
Nottingham in turn, chosen with a fixed seed), renders each with a soundfont in rotation, runs the
network once and decodes its output twice: with basic-pitch's own note settings (melodia trick on,
onset 0.5, frame 0.3) and with `transcribe`'s defaults. Prints per piece and mean precision, recall
and F1 of note onsets (mir_eval, 50 ms tolerance, offsets ignored, pitch must match), and seconds of
transcription per minute of audio. --grid also sweeps the thresholds, which is how the defaults
were chosen (on this validation split only).

The reference is what was sounded: the piano notes with the sustain pedal folded in, notes the
renderer cannot sound (zero length) left out, and unisons merged (the same key struck in two tracks
within 50 ms sounds once, as POP909's melody and piano tracks often do).
"""

import argparse
import itertools
import random
import time
from pathlib import Path

import numpy as np
import pretty_midi

from pianoapp import constants
from pianoapp.data.corpora import load_items
from pianoapp.evaluate.transcription import onset_scores, sounded_notes
from pianoapp.io import transcribe as tr
from pianoapp.io.midi import read_midi
from pianoapp.io.render import list_soundfonts, render

COLLECTIONS = ("asap", "pop909", "nottingham")  # picked in turn
BASIC_PITCH = {"onset_threshold": 0.5, "frame_threshold": 0.3, "min_note_ms": tr.MIN_NOTE_MS, "melodia_trick": True}
TUNED = {"onset_threshold": tr.ONSET_THRESHOLD, "frame_threshold": tr.FRAME_THRESHOLD, "min_note_ms": tr.MIN_NOTE_MS}


def pick_items(n: int, data_dir: Path, seed: int = 0):
    """n validation items, one per piece, taking ASAP performances, POP909 and Nottingham in turn."""
    rng = random.Random(seed)
    pools = []
    for name in COLLECTIONS:
        by_piece = {}
        for item in load_items(name, data_dir, split="val"):
            if item.meta.get("kind") != "score":
                by_piece.setdefault(item.piece_id, item)
        pool = sorted(by_piece.values(), key=lambda it: it.item_id)
        rng.shuffle(pool)
        pools.append(pool)
    mixed = [it for group in itertools.zip_longest(*pools) for it in group if it is not None]
    return mixed[:n]


def excerpt(pm: pretty_midi.PrettyMIDI, seconds: float) -> pretty_midi.PrettyMIDI:
    """The first `seconds`: notes starting before then (cut there), pedal moves before then."""
    out = pretty_midi.PrettyMIDI()
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        cut = pretty_midi.Instrument(program=0, name=inst.name)
        cut.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, seconds))
                     for n in inst.notes if n.start < seconds and n.end > n.start]
        cut.control_changes = [c for c in inst.control_changes if c.time < seconds]
        out.instruments.append(cut)
    return out


def _prf(ref, est) -> tuple[float, float, float]:
    s = onset_scores(ref, est)
    return s["precision"], s["recall"], s["f1"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=constants.DEFAULT_DATA_DIR)
    ap.add_argument("--pieces", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--grid", action="store_true", help="also sweep onset/frame thresholds and note length")
    args = ap.parse_args()

    fonts = list(list_soundfonts())
    tr.activations(np.zeros(constants.SAMPLE_RATE, np.float32))  # load the model before timing
    pieces, audio_s, transcribe_s = [], 0.0, 0.0
    print(f"{'piece':48s} {'soundfont':18s} {'notes':>5s}   basic-pitch P/R/F1    tuned P/R/F1")
    for i, item in enumerate(pick_items(args.pieces, args.data)):
        pm = excerpt(read_midi(item.path, max_seconds=float("inf")), args.seconds)
        font = fonts[(i + i // len(COLLECTIONS)) % len(fonts)]  # every collection meets every soundfont
        audio = render(pm, soundfont=font)
        t = time.perf_counter()
        acts = tr.activations(audio)
        tuned = tr.decode(acts, **TUNED).instruments[0].notes
        transcribe_s += time.perf_counter() - t
        audio_s += audio.size / constants.SAMPLE_RATE
        ref = sounded_notes(pm)
        before = _prf(ref, tr.decode(acts, **BASIC_PITCH).instruments[0].notes)
        after = _prf(ref, tuned)
        pieces.append((ref, acts))
        print(f"{item.item_id[:48]:48s} {font:18s} {len(ref):5d}   "
              f"{before[0]:.2f} {before[1]:.2f} {before[2]:.3f}      {after[0]:.2f} {after[1]:.2f} {after[2]:.3f}",
              flush=True)

    def mean_prf(settings: dict) -> np.ndarray:
        return np.mean([_prf(ref, tr.decode(acts, **settings).instruments[0].notes)
                        for ref, acts in pieces], axis=0)

    for name, settings in (("basic-pitch settings", BASIC_PITCH), ("tuned defaults", TUNED)):
        p, r, f = mean_prf(settings)
        print(f"mean over {len(pieces)} pieces, {name:20s}: P {p:.3f}  R {r:.3f}  onset F1 {f:.3f}  ({settings})")
    print(f"speed: {transcribe_s / audio_s * 60:.1f} s per minute of audio "
          f"({audio_s:.0f} s of audio; network + decoding, model already loaded)")

    if args.grid:
        rows = []
        for onset, frame, min_ms in itertools.product((0.5, 0.55, 0.6, 0.65, 0.7), (0.3, 0.4, 0.5), (35.0, 58.0, 90.0)):
            settings = {"onset_threshold": onset, "frame_threshold": frame, "min_note_ms": min_ms}
            rows.append((mean_prf(settings), settings))
        print("best 8 of the grid (melodia trick off):")
        for (p, r, f), settings in sorted(rows, key=lambda row: -row[0][2])[:8]:
            print(f"  P {p:.3f}  R {r:.3f}  F1 {f:.3f}  {settings}")


if __name__ == "__main__":
    main()
