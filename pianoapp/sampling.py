"""Sampling from the piano LM: temperature, top-p and min-p over grammar-masked logits, with a KV cache.

Masking with `Tokenizer.allowed_next` keeps every sampled sequence decodable (note → onset → dur,
onsets monotone inside a segment); on top of it, `<E>`, `<S>`, `<PAD>` and extra tokens are never
sampled, and long silences (more than `max_silent_segments` empty segments in a row) are cut off.
On a CPU a PianoLM samples through its int8 copy (`decoding_model`).
"""

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from pianoapp.models.lm import PianoLM, cpu_inference_copy
from pianoapp.tokenizer import Tokenizer


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.98  # Aria's defaults
    top_p: float = 1.0
    min_p: float = 0.035
    max_silent_segments: int = 2

    def __post_init__(self) -> None:
        if not 0.05 <= self.temperature <= 5:
            raise ValueError("temperature must be between 0.05 and 5")
        if not 0 < self.top_p <= 1:
            raise ValueError("top-p must be in (0, 1]")
        if not 0 <= self.min_p < 1:
            raise ValueError("min-p must be in [0, 1)")


def filter_probs(probs: torch.Tensor, *, top_p: float, min_p: float) -> torch.Tensor:
    """Zero out tokens outside the nucleus (top-p) and below min_p × the top probability."""
    if min_p > 0:
        probs = torch.where(probs >= min_p * probs.max(), probs, torch.zeros_like(probs))
    if top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        cumulative = sorted_p.cumsum(-1)
        drop = cumulative - sorted_p > top_p * cumulative[-1]  # keep the smallest set reaching top_p
        probs = probs.clone()
        probs[order[drop]] = 0
    return probs / probs.sum()


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """An id drawn with probability proportional to `probs` (1-D, non-negative): the cumulative
    distribution over the ids with non-zero probability, inverted at one uniform number.
    (torch.multinomial took 0.2 ms a call over the vocabulary, most of a step's sampling work.)"""
    ids = probs.nonzero()[:, 0]
    cumulative = probs[ids].cumsum(0)
    at = int(torch.searchsorted(cumulative, torch.rand(1, generator=generator) * cumulative[-1], right=True))
    return int(ids[min(at, len(ids) - 1)])  # rounding can put the number at the very top


_cpu_copies: "weakref.WeakKeyDictionary[PianoLM, PianoLM]" = weakref.WeakKeyDictionary()


def decoding_model(model):
    """What `sample` runs: for a PianoLM on a CPU its `lm.cpu_inference_copy`, made once per model
    (so the model's weights must not change afterwards; `load_model`'s never do), which samples
    about twice as fast (bench/lm_speed.py); any other model as it is."""
    if not isinstance(model, PianoLM) or next(model.parameters()).device.type != "cpu":
        return model
    if model not in _cpu_copies:
        _cpu_copies[model] = cpu_inference_copy(model)
    return _cpu_copies[model]


@contextmanager
def one_thread():
    """Decode on one thread: a one-token step is too small to share out, and two threads on a busy
    2-core machine wait on each other (bench/lm_speed.py measured many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sample(
    model: PianoLM,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    *,
    end_step: int,
    config: SamplingConfig = SamplingConfig(),
    seed: int = 0,
    max_new_tokens: int | None = None,
    prefix_embeds: torch.Tensor | None = None,
    quantized: bool = True,
) -> Iterator[list[int]]:
    """Yield the new ids after each completed note, until the music reaches `end_step` (absolute
    time steps from the start of the prompt), the context is full, or `max_new_tokens` is reached.

    The prompt must end between note groups (it is `Tokenizer.encode(..., add_eos=False)` output).
    The same seed gives the same ids. `quantized=False` decodes with the model's own weights even on
    a CPU (the baseline of bench/lm_speed.py).
    """
    if quantized:
        model = decoding_model(model)
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    n_prefix = 0 if prefix_embeds is None else prefix_embeds.shape[1]
    budget = model.config.context_len - n_prefix - len(prompt_ids)
    if max_new_tokens is not None:
        budget = min(budget, max_new_tokens)
    if budget < 3:
        raise ValueError("the prompt fills the model's context; shorten it")

    samplable = np.ones(tokenizer.vocab_size, dtype=bool)
    samplable[[tokenizer.eos_id, tokenizer.bos_id, tokenizer.pad_id, tokenizer.unk_id]] = False
    samplable[tokenizer.extra_offset:] = False

    ids = list(prompt_ids)
    segments = ids.count(tokenizer.time_id)
    silent = 0
    new: list[int] = []
    # Inference mode and the thread count hold for one thread only, and a streaming consumer (the app)
    # may resume this generator on any of its worker threads: enter them for each step, never across
    # a `yield` (a step resumed outside the mode fails on the KV cache made inside it: 6 of 16
    # continuations did with 8 clients in bench/concurrency.py).
    with torch.inference_mode(), one_thread():
        logits, cache = model(torch.tensor([ids], device=device), prefix_embeds=prefix_embeds)
    for _ in range(budget):
        with torch.inference_mode(), one_thread():
            allowed = tokenizer.allowed_next(ids) & samplable
            if silent >= config.max_silent_segments:
                allowed[tokenizer.time_id] = False
            scores = logits[0, -1].float().cpu() / config.temperature
            scores.masked_fill_(torch.from_numpy(~allowed), float("-inf"))
            probs = filter_probs(torch.softmax(scores, -1), top_p=config.top_p, min_p=config.min_p)
            token = draw(probs, generator)
            ids.append(token)
            new.append(token)
            kind = tokenizer.token_kind(token)
            if kind == "time":
                segments += 1
                silent += 1
            elif kind == "onset":
                silent = 0
                if segments * tokenizer.n_onsets + token - tokenizer.onset_offset >= end_step:
                    new.pop()
                    new.pop()  # drop the note whose onset passed the end, and stop
                    break
            logits, cache = model(torch.tensor([[token]], device=device), cache=cache)
        if kind == "dur":
            yield new
    # Trailing <T> tokens or a half-written group carry no notes; callers decode `new` tolerant anyway.
    yield new
