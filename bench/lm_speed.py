"""Piano LM generation speed on this machine's CPU: the int8 copy that sampling decodes with
against the model's fp32 weights, the KV cache against recomputing the whole sequence each step,
speed as a multiple of real time, time to first note, peak memory.

    python bench/lm_speed.py [--model models/lm-small] [--data ../shared/data]
                             [--prompt-tokens 256] [--new-tokens 512] [--seconds 30] [--prompts 6]

Prompts are windows of test-split pieces (`evaluate.continuation.draw_prompts`, seed 0). Prints,
in this order (the first measurement is the only one that includes loading the model and making
its int8 copy): time to first note through `services.continue_.continue_notes`, cold and with the
model loaded; `sampling.sample` after one prompt (the same sampler and seed each time) decoding
with the int8 copy, with the fp32 model, and with the fp32 model fed the full sequence at every
step (no cache): tokens per second, the same as a multiple of real time (seconds of music those
tokens make per second of wall time), and the ratios; seconds of music and notes generated
per second of wall time for `--seconds`-long continuations through the service, int8 and fp32
taking turns; peak resident memory; the load average before and after. On a shared machine wall
time depends on the other jobs, so each speed is also given per second of this process's CPU
time: about what a free core would give (less, since busy neighbours also slow its caches).
"""

import argparse
import os
import resource
import time
from contextlib import nullcontext
from unittest import mock

import torch

from pianoapp import constants
from pianoapp.data.sequences import array_to_notes
from pianoapp.evaluate.continuation import draw_prompts
from pianoapp.models.checkpoint import load_config, load_model
from pianoapp.sampling import sample
from pianoapp.services.continue_ import continue_notes
from pianoapp.tokenizer import Tokenizer
from pianoapp.train.lm import lm_pieces

PRECISIONS = ("int8", "fp32")  # what sampling decodes with on a CPU, then the model's own weights


class NoCache(torch.nn.Module):
    """The baseline: the same model fed every id so far at each step (its "cache" is those ids)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, ids, *, prefix_embeds=None, cache=None):
        ids = ids if cache is None else torch.cat([cache, ids], dim=1)
        logits, _ = self.model(ids, prefix_embeds=prefix_embeds)
        return logits, ids


def fp32_only(precision: str):
    """Within it, the service decodes with the model's fp32 weights if `precision` says so."""
    if precision == "int8":
        return nullcontext()
    return mock.patch("pianoapp.sampling.decoding_model", lambda model: model)


def first_note_seconds(prompt, model_dir) -> float:
    start = time.perf_counter()
    stream = continue_notes(prompt, seconds=10, seed=0, model_dir=model_dir)
    for update in stream:
        if update.generated:
            break
    stream.close()
    return time.perf_counter() - start


def tokens_per_second(model, tokenizer, prompt_ids, n_new, *, quantized) -> tuple[float, float, list[int]]:
    """Tokens per second of wall time and of this process's CPU time, and the new ids."""
    wall, cpu = time.perf_counter(), time.process_time()
    new: list[int] = []
    for new in sample(model, tokenizer, prompt_ids, end_step=10**9, seed=0, max_new_tokens=n_new,
                      quantized=quantized):
        pass
    return len(new) / (time.perf_counter() - wall), len(new) / (time.process_time() - cpu), new


def music_seconds(tokenizer, prompt_ids, new_ids) -> float:
    """How far the new ids take the music past the prompt's last onset."""
    n_prompt = len(tokenizer.decode(prompt_ids))
    notes = tokenizer.decode(prompt_ids + new_ids)
    return max(n.start for n in notes[n_prompt:]) - max(n.start for n in notes[:n_prompt])


def prompt_of_length(tokenizer, notes, n_tokens: int) -> list[int]:
    """The longest start of the piece's ids that ends after a whole note and has at most n_tokens."""
    ids = tokenizer.encode(notes, add_eos=False)[:n_tokens]
    while tokenizer.token_kind(ids[-1]) != "dur":
        ids.pop()
    return ids


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(constants.MODELS_DIR / "lm-small"))
    ap.add_argument("--data", default=str(constants.DEFAULT_DATA_DIR))
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=30.0, help="continuation length for the real-time figure")
    ap.add_argument("--prompts", type=int, default=6)
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} (sampling decodes on one thread), "
          f"load average {load_average()}")
    pieces = lm_pieces("test", data_dir=args.data)
    prompts = draw_prompts(pieces, args.prompts, prompt_seconds=15.0, seconds=args.seconds, seed=0)
    first = array_to_notes(prompts[0].notes)

    cold = first_note_seconds(first, args.model)  # loads the model and makes its int8 copy: must come first
    warm = first_note_seconds(first, args.model)
    print(f"time to first note: {cold:.2f} s cold (model load included), {warm:.3f} s with the model loaded")

    model = load_model(args.model)
    tokenizer = Tokenizer.from_dict(load_config(args.model)["tokenizer"])
    piece = next(p for p in pieces if len(p) > args.prompt_tokens)  # enough notes for the prompt
    prompt_ids = prompt_of_length(tokenizer, array_to_notes(piece - [piece[0, 0], piece[0, 0], 0, 0]),
                                  args.prompt_tokens)
    print(f"sampling {args.new_tokens} tokens after a {len(prompt_ids)}-token prompt:")
    speed, ids = {}, {}
    for name, runs, quantized in (("int8, KV cache", model, True), ("fp32, KV cache", model, False),
                                  ("fp32, no cache", NoCache(model), False)):
        speed[name], per_cpu_s, ids[name] = tokens_per_second(runs, tokenizer, prompt_ids, args.new_tokens,
                                                              quantized=quantized)
        music_per_token = music_seconds(tokenizer, prompt_ids, ids[name]) / len(ids[name])
        print(f"  {name}  {speed[name]:6.1f} tokens/s  {speed[name] * music_per_token:5.2f}x real time  "
              f"(CPU time: {1000 / per_cpu_s:5.1f} ms per token, "
              f"{per_cpu_s * music_per_token:5.2f}x real time)")
    same = sum(a == b for a, b in zip(ids["fp32, KV cache"], ids["fp32, no cache"]))
    print(f"  KV cache speed-up: {speed['fp32, KV cache'] / speed['fp32, no cache']:.1f}x in fp32 "
          f"({same} of {len(ids['fp32, no cache'])} sampled ids equal), "
          f"{speed['int8, KV cache'] / speed['fp32, no cache']:.1f}x with the int8 copy")
    print(f"  int8 against fp32, with the cache: {speed['int8, KV cache'] / speed['fp32, KV cache']:.2f}x")

    # Both precisions continue each prompt in turn, so that they see the same load on a shared machine.
    wall, cpu = dict.fromkeys(PRECISIONS, 0.0), dict.fromkeys(PRECISIONS, 0.0)
    notes = dict.fromkeys(PRECISIONS, 0)
    for prompt in prompts:
        for precision in PRECISIONS:
            start, start_cpu = time.perf_counter(), time.process_time()
            with fp32_only(precision):
                for result in continue_notes(array_to_notes(prompt.notes), seconds=args.seconds, seed=0,
                                             model_dir=args.model):
                    pass
            took = time.perf_counter() - start
            wall[precision] += took
            cpu[precision] += time.process_time() - start_cpu
            n = len(result.generated)
            notes[precision] += n
            print(f"  {precision} {n:4d} notes ({n / args.seconds:4.1f}/s of music) in {took:5.1f} s: "
                  f"{args.seconds / took:5.2f}x real time")
    music = len(prompts) * args.seconds
    for precision in PRECISIONS:
        print(f"{precision} continuation speed ({len(prompts)} continuations of {args.seconds:.0f} s): "
              f"{music / wall[precision]:.2f}x real time, {notes[precision] / wall[precision]:.1f} notes per "
              f"second; per second of CPU time: {music / cpu[precision]:.2f}x real time")
    print(f"int8 against fp32 through the service: {wall['fp32'] / wall['int8']:.2f}x in real time, "
          f"{notes['int8'] / wall['int8'] / (notes['fp32'] / wall['fp32']):.2f}x in notes per second, "
          f"{cpu['fp32'] / cpu['int8']:.2f}x in CPU time")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB; load average now {load_average()}")


if __name__ == "__main__":
    main()
