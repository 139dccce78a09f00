"""Piano LM generation speed on this machine's CPU: the KV cache against recomputing the whole
sequence each step, speed as a multiple of real time, time to first note, peak memory.

    python bench/lm_speed.py [--model models/lm-small] [--data ../shared/data]
                             [--prompt-tokens 256] [--new-tokens 512] [--seconds 30] [--prompts 6]

Prompts are windows of test-split pieces (`evaluate.continuation.draw_prompts`, seed 0). Prints,
in this order (the first measurement is the only one that includes loading the model):
time to first note through `services.continue_.continue_notes`, cold and with the model loaded;
tokens per second of `sampling.sample` with the cache and without it (the same sampler and seed;
the baseline feeds the full sequence at every step) and their ratio; seconds of music generated
per second of wall time for `--seconds`-long continuations; peak resident memory.
"""

import argparse
import os
import resource
import time

import torch

from pianoapp import constants
from pianoapp.data.sequences import array_to_notes
from pianoapp.evaluate.continuation import draw_prompts
from pianoapp.models.checkpoint import load_config, load_model
from pianoapp.sampling import sample
from pianoapp.services.continue_ import continue_notes
from pianoapp.tokenizer import Tokenizer
from pianoapp.train.lm import lm_pieces


class NoCache(torch.nn.Module):
    """The baseline: the same model fed every id so far at each step (its "cache" is those ids)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, ids, *, prefix_embeds=None, cache=None):
        ids = ids if cache is None else torch.cat([cache, ids], dim=1)
        logits, _ = self.model(ids, prefix_embeds=prefix_embeds)
        return logits, ids


def first_note_seconds(prompt, model_dir) -> float:
    start = time.perf_counter()
    stream = continue_notes(prompt, seconds=10, seed=0, model_dir=model_dir)
    for update in stream:
        if update.generated:
            break
    stream.close()
    return time.perf_counter() - start


def tokens_per_second(model, tokenizer, prompt_ids, n_new) -> tuple[float, list[int]]:
    start = time.perf_counter()
    new: list[int] = []
    for new in sample(model, tokenizer, prompt_ids, end_step=10**9, seed=0, max_new_tokens=n_new):
        pass
    return len(new) / (time.perf_counter() - start), new


def prompt_of_length(tokenizer, notes, n_tokens: int) -> list[int]:
    """The longest start of the piece's ids that ends after a whole note and has at most n_tokens."""
    ids = tokenizer.encode(notes, add_eos=False)[:n_tokens]
    while tokenizer.token_kind(ids[-1]) != "dur":
        ids.pop()
    return ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(constants.MODELS_DIR / "lm-small"))
    ap.add_argument("--data", default=str(constants.DEFAULT_DATA_DIR))
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=30.0, help="continuation length for the real-time figure")
    ap.add_argument("--prompts", type=int, default=6)
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} (sampling decodes on one thread), "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    pieces = lm_pieces("test", data_dir=args.data)
    prompts = draw_prompts(pieces, args.prompts, prompt_seconds=15.0, seconds=args.seconds, seed=0)
    first = array_to_notes(prompts[0].notes)

    cold = first_note_seconds(first, args.model)  # loads the model: must come first
    warm = first_note_seconds(first, args.model)
    print(f"time to first note: {cold:.2f} s cold (model load included), {warm:.3f} s with the model loaded")

    model = load_model(args.model)
    tokenizer = Tokenizer.from_dict(load_config(args.model)["tokenizer"])
    piece = next(p for p in pieces if len(p) > args.prompt_tokens)  # enough notes for the prompt
    prompt_ids = prompt_of_length(tokenizer, array_to_notes(piece - [piece[0, 0], piece[0, 0], 0, 0]),
                                  args.prompt_tokens)
    cached, ids_cached = tokens_per_second(model, tokenizer, prompt_ids, args.new_tokens)
    full, ids_full = tokens_per_second(NoCache(model), tokenizer, prompt_ids, args.new_tokens)
    same = sum(a == b for a, b in zip(ids_cached, ids_full))
    print(f"{len(ids_cached)} tokens after a {len(prompt_ids)}-token prompt: KV cache {cached:.1f} tokens/s, "
          f"no cache (full sequence each step) {full:.2f} tokens/s, ratio {cached / full:.1f}x "
          f"({same} of {len(ids_cached)} sampled ids equal)")

    music = wall = 0.0
    for prompt in prompts:
        start = time.perf_counter()
        for result in continue_notes(array_to_notes(prompt.notes), seconds=args.seconds, seed=0,
                                     model_dir=args.model):
            pass
        took = time.perf_counter() - start
        music, wall = music + args.seconds, wall + took
        print(f"  {len(result.generated):4d} notes ({len(result.generated) / args.seconds:4.1f}/s of music) "
              f"in {took:5.1f} s: {args.seconds / took:5.2f}x real time")
    print(f"continuation speed: {music / wall:.2f}x real time ({len(prompts)} continuations of {args.seconds:.0f} s)")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()
    print(f"peak resident memory: {peak_mib:.0f} MiB; load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
