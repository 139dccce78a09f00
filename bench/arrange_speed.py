"""Arrangement speed on this machine's CPU: 8 bars of the demo lead sheet in the style of a demo
recording, against the rule-based baseline in the same run.

    python bench/arrange_speed.py [--model models/arranger] [--bars 8] [--repeats 3]
                                  [--leadsheet assets/nottingham_playford14_lead_sheet.mid]
                                  [--reference assets/joplin_maple_leaf_rag_opening.flac]

Prints: loading the arranger (the frozen LM and audio encoder composed with the trained parts) and
the first call (which also merges the adapters and makes the int8 decoding copy); then, per repeat
(seeds 0, 1, ...), the whole service call `services.arrange.arrange` (read the lead sheet and the
reference, transcribe the reference for its style, sample, render, write the MIDI), the sampling
alone (`arrange_sheet`), and the rule-based arranger on the same bars; the medians, the ratio
model / baseline and the goal (≤ 20 s for the service call); the load average before and after
(the machine is shared).
"""

import argparse
import os
import statistics
import time

import torch

from pianoapp import constants
from pianoapp.models.rule_arranger import arrange as rule_arrange
from pianoapp.services.arrange import (
    arrange,
    arrange_sheet,
    load_arranger,
    load_leadsheet,
    load_reference,
    reference_style,
)

GOAL_S = 20.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(constants.MODELS_DIR / "arranger"))
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--leadsheet", default=str(constants.ASSETS_DIR / "nottingham_playford14_lead_sheet.mid"))
    p.add_argument("--reference", default=str(constants.ASSETS_DIR / "joplin_maple_leaf_rag_opening.flac"))
    args = p.parse_args()
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")

    t = time.perf_counter()
    arranger, codec = load_arranger(args.model)
    print(f"load arranger            {time.perf_counter() - t:6.2f} s")
    t = time.perf_counter()
    arrange(args.leadsheet, args.reference, bars=args.bars, seed=0, model_dir=args.model)
    print(f"first call (+ decoder)   {time.perf_counter() - t:6.2f} s")

    sheet, _ = load_leadsheet(args.leadsheet, bars=args.bars)
    clip, _ = load_reference(args.reference)
    style = reference_style(clip)
    service, sampling, rules = [], [], []
    for seed in range(args.repeats):
        t = time.perf_counter()
        result = arrange(args.leadsheet, args.reference, bars=args.bars, seed=seed, model_dir=args.model)
        service.append(time.perf_counter() - t)
        t = time.perf_counter()
        notes = arrange_sheet(arranger, codec, sheet, clip, style=style, seed=seed)
        sampling.append(time.perf_counter() - t)
        t = time.perf_counter()
        rule_arrange(sheet)
        rules.append(time.perf_counter() - t)
        print(f"seed {seed}: service {service[-1]:6.2f} s · sampling {sampling[-1]:6.2f} s "
              f"({len(notes)} notes) · rule-based {rules[-1] * 1000:6.1f} ms · {result.sheet.n_bars} bars")
    med = {name: statistics.median(times)
           for name, times in (("service", service), ("sampling", sampling), ("rules", rules))}
    print(f"median over {args.repeats}: service {med['service']:.2f} s, sampling {med['sampling']:.2f} s, "
          f"rule-based {med['rules'] * 1000:.1f} ms; "
          f"model / rule-based = {med['sampling'] / med['rules']:,.0f}x")
    verdict = "meets" if med["service"] <= GOAL_S else "misses"
    print(f"{args.bars} bars through the service: {med['service']:.2f} s, {verdict} the goal of {GOAL_S:g} s")
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
