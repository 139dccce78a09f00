"""How well the piano LM continues held-out music, and whether it copies its training data.

A prompt is `prompt_seconds` of a held-out piece; its true continuation is what the piece plays in
the `seconds` after the prompt's last onset (where the continuation service's clock starts). Each
continuation is compared with its prompt the way a listener hears "the same music going on":
pitch-class, inter-onset-interval (IOI) and duration histograms (overlap = histogram intersection:
1 when identical, 0 when disjoint), note density and mean velocity. Continuations compared:

- model: the LM through `services.continue_` (what the app and CLI give), Aria's sampling settings;
- true: the piece's own next notes, the reference the model should come close to;
- ngram: the Kneser-Ney 4-gram of `evaluate.lm` sampled by the same sampler, a weak model;
- other_piece: `seconds` of a different held-out piece, what ignoring the prompt scores.

Copying: the share of a passage's 8-note n-grams (pitch intervals and IOI bins, so a transposed or
slightly re-timed copy matches too) that occur anywhere in the training split. The held-out
continuations give the level of figures music simply shares (scales, repeated chords); a model
rate far above it means memorised passages.
"""

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from pianoapp.data.sequences import END, PITCH, START, VELOCITY, array_to_notes, notes_to_array
from pianoapp.errors import BadInputError

# Bin edges (ms) shared by IOIs and durations: 0, then half-octave steps from 25 ms to 6.4 s, and
# everything longer in the last bin; the first bin (< 25 ms) holds notes struck together.
TIME_EDGES_MS = np.concatenate([[0.0], 25 * 2 ** (np.arange(17) / 2)])
COPY_NGRAM = 8  # notes per n-gram in the copy check
MIN_PROMPT_NOTES = 8
NGRAM_TRAIN_WINDOWS = 2000  # as evaluate.lm fits its baseline
_HASH = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for the rolling n-gram hash
SOURCES = ("model", "true", "ngram", "other_piece")


# --- metrics on note arrays (n, 4): [start_ms, end_ms, pitch, velocity] -------------------------


def time_bins(ms: np.ndarray) -> np.ndarray:
    """The TIME_EDGES_MS bin of each time span."""
    return np.searchsorted(TIME_EDGES_MS, ms, side="right") - 1


def _shares(bins: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    return counts / max(counts.sum(), 1)


def iois(notes: np.ndarray) -> np.ndarray:
    """Time (ms) from each note's onset to the next one's, notes in onset order."""
    return np.diff(np.sort(notes[:, START]))


@dataclass(frozen=True)
class Features:
    pitch_classes: np.ndarray  # (12,) share of notes per pitch class
    iois: np.ndarray  # share of inter-onset intervals per TIME_EDGES_MS bin
    durations: np.ndarray  # share of note durations per TIME_EDGES_MS bin
    density: float  # notes per second
    velocity: float  # mean MIDI velocity, nan without notes


def features(notes: np.ndarray, seconds: float) -> Features:
    """What `compare` needs of a passage lasting `seconds`."""
    n_bins = len(TIME_EDGES_MS)
    return Features(
        pitch_classes=_shares(notes[:, PITCH] % 12, 12),
        iois=_shares(time_bins(iois(notes)), n_bins),
        durations=_shares(time_bins(notes[:, END] - notes[:, START]), n_bins),
        density=len(notes) / seconds,
        velocity=float(notes[:, VELOCITY].mean()) if len(notes) else math.nan,
    )


def overlap(p: np.ndarray, q: np.ndarray) -> float:
    """Histogram intersection of two distributions: 1 when equal, 0 when disjoint (or one is empty)."""
    return float(np.minimum(p, q).sum())


def compare(a: Features, b: Features) -> dict[str, float]:
    """How much passage b sounds like passage a: three overlaps (higher is closer) and two gaps
    (lower is closer): density relative to a's, and mean velocity in MIDI units."""
    return {
        "pitch_class": overlap(a.pitch_classes, b.pitch_classes),
        "ioi": overlap(a.iois, b.iois),
        "duration": overlap(a.durations, b.durations),
        "density_gap": abs(b.density / a.density - 1) if a.density else math.nan,
        "velocity_gap": abs(b.velocity - a.velocity),
    }


def ngram_keys(notes: np.ndarray, n: int = COPY_NGRAM) -> np.ndarray:
    """A 64-bit key for each run of n consecutive notes (in onset, then pitch order), made of its
    n - 1 pitch intervals and IOI bins."""
    if len(notes) < n:
        return np.zeros(0, np.uint64)
    order = np.lexsort((notes[:, PITCH], notes[:, START]))
    start, pitch = notes[order, START].astype(np.int64), notes[order, PITCH].astype(np.int64)
    steps = ((np.diff(pitch) + 128) * len(TIME_EDGES_MS) + time_bins(np.diff(start))).astype(np.uint64)
    keys = np.zeros(len(steps) - n + 2, np.uint64)
    for j in range(n - 1):  # polynomial hash, wrapping modulo 2**64
        keys = keys * _HASH + steps[j : j + len(keys)]
    return keys


def training_ngrams(pieces: list[np.ndarray], n: int = COPY_NGRAM) -> np.ndarray:
    """The sorted n-gram keys of every piece: the index `copied` looks passages up in."""
    return np.sort(np.concatenate([ngram_keys(p, n) for p in pieces] + [np.zeros(0, np.uint64)]))


def copied(notes: np.ndarray, index: np.ndarray, n: int = COPY_NGRAM) -> tuple[int, int]:
    """(n-grams of the passage found in the index, n-grams in the passage)."""
    keys = ngram_keys(notes, n)
    if not len(index):
        return 0, len(keys)
    at = np.minimum(np.searchsorted(index, keys), len(index) - 1)  # sorted lookup: np.isin re-sorts the index
    return int((index[at] == keys).sum()), len(keys)


def copy_rate(notes: np.ndarray, index: np.ndarray, n: int = COPY_NGRAM) -> float:
    """Share of the passage's n-grams that occur in the index; nan if it has fewer than n notes."""
    found, total = copied(notes, index, n)
    return found / total if total else math.nan


# --- the protocol --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    notes: np.ndarray  # the prompt, starting at 0 ms
    truth: np.ndarray  # what the piece plays next, on the prompt's clock
    other: np.ndarray  # `seconds` of another piece, starting at 0 ms


def draw_prompts(pieces: list[np.ndarray], n: int, *, prompt_seconds: float, seconds: float,
                 seed: int) -> list[Prompt]:
    """n prompts from pieces chosen uniformly (each long enough), at uniform positions; every
    prompt has at least MIN_PROMPT_NOTES notes and a true continuation of at least one note."""
    rng = np.random.default_rng(seed)
    span_ms, cont_ms = prompt_seconds * 1000, seconds * 1000
    eligible = [p for p in pieces if len(p) and p[-1, START] - p[0, START] > span_ms + cont_ms]
    if len(eligible) < 2:
        raise BadInputError(f"Fewer than 2 pieces of the data last longer than {prompt_seconds + seconds:.0f} s; "
                            "pass --data with the full corpus or shorten the prompts.")
    prompts = []
    for _ in range(100 * n):  # redraws for windows that fall on rests; real music needs few
        if len(prompts) == n:
            break
        k, j = rng.choice(len(eligible), size=2, replace=False)
        piece, other = eligible[k], eligible[j]
        t0 = rng.uniform(piece[0, START], piece[-1, START] - span_ms - cont_ms)
        u = rng.uniform(other[0, START], other[-1, START] - cont_ms)
        notes = piece[(piece[:, START] >= t0) & (piece[:, START] < t0 + span_ms)]
        if len(notes) < MIN_PROMPT_NOTES:
            continue
        last = notes[-1, START]
        truth = piece[(piece[:, START] >= t0 + span_ms) & (piece[:, START] < last + cont_ms)]
        window = other[(other[:, START] >= u) & (other[:, START] < u + cont_ms)]
        if len(truth) and len(window):
            prompts.append(Prompt(notes=_moved(notes, -t0), truth=_moved(truth, -t0), other=_moved(window, -u)))
    if len(prompts) < n:
        raise BadInputError(f"Found only {len(prompts)} of {n} prompts with notes; pass --data with the full corpus.")
    return prompts


def _moved(notes: np.ndarray, by_ms: float) -> np.ndarray:
    moved = notes.copy()
    moved[:, [START, END]] += round(by_ms)
    return moved


class _NGramLM:
    """The n-gram behind the call `sampling.sample` makes of the LM, (logits, cache), so both are
    sampled by the same code. Its cache is the last order - 1 ids."""

    def __init__(self, ngram, context_len: int):
        self.ngram = ngram
        self.config = SimpleNamespace(context_len=context_len)

    def parameters(self):
        yield torch.zeros(0)

    def __call__(self, ids: torch.Tensor, *, prefix_embeds=None, cache: list[int] | None = None):
        history = ((cache or []) + ids[0].tolist())[-(self.ngram.order - 1):]
        probs = torch.from_numpy(self.ngram.next_probs(history)).float()
        return probs.log()[None, None], history


def evaluate_continuations(
    model_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    n_prompts: int = 100,
    prompt_seconds: float = 15.0,
    seconds: float = 10.0,
    seed: int = 0,
    max_items: int = 0,
) -> dict:
    """Continuation quality on `n_prompts` prompts of the split and copy rates against the
    training split (see the module docstring). The same arguments give the same numbers."""
    from tqdm import tqdm

    from pianoapp.evaluate.lm import KneserNey, grammar_classes, token_windows
    from pianoapp.models.checkpoint import load_config
    from pianoapp.sampling import SamplingConfig, sample
    from pianoapp.services.continue_ import continue_notes
    from pianoapp.tokenizer import Tokenizer
    from pianoapp.train.lm import lm_pieces

    data_dir = Path(data_dir) if data_dir else None
    doc = load_config(model_dir)
    tokenizer = Tokenizer.from_dict(doc["tokenizer"])
    sampling = SamplingConfig()  # Aria's settings, the service's defaults
    prompts = draw_prompts(lm_pieces(split, data_dir=data_dir, max_items=max_items), n_prompts,
                           prompt_seconds=prompt_seconds, seconds=seconds, seed=seed)
    train = lm_pieces("train", data_dir=data_dir, max_items=max_items)
    index = training_ngrams(train)
    ngram = KneserNey(order=4, classes=grammar_classes(tokenizer)).fit(
        token_windows(train, tokenizer, context_len=doc["model"]["context_len"], n=NGRAM_TRAIN_WINDOWS, seed=seed),
        tokenizer.vocab_size,
    )
    ngram_lm = _NGramLM(ngram, context_len=10**9)  # it sees 3 ids: the whole prompt fits
    max_ngram_tokens = int(3 * 100 * seconds)  # 100 notes a second: more than any music, a guard only
    step_ms = tokenizer.config.time_step_ms

    def quantized(notes: np.ndarray) -> np.ndarray:
        # Through the tokenizer's grid and velocity bins, as the model's own notes are, so that
        # rounding does not count as a difference.
        return notes_to_array(tokenizer.decode(tokenizer.encode(array_to_notes(notes))))

    scores = {source: [] for source in SOURCES}
    copies = {source: np.zeros(2, np.int64) for source in SOURCES}
    counts = {source: [] for source in SOURCES}
    for i, prompt in enumerate(tqdm(prompts, desc="continuations", file=sys.stderr, disable=None, leave=False)):
        result = None
        for result in continue_notes(array_to_notes(prompt.notes), seconds=seconds, seed=seed + i,
                                     model_dir=model_dir, temperature=sampling.temperature,
                                     top_p=sampling.top_p, min_p=sampling.min_p):
            pass
        prompt_ids = tokenizer.encode(array_to_notes(prompt.notes), add_eos=False)
        end_step = round((prompt.notes[-1, START] + seconds * 1000) / step_ms)
        new_ids: list[int] = []
        for new_ids in sample(ngram_lm, tokenizer, prompt_ids, end_step=end_step, config=sampling, seed=seed + i,
                              max_new_tokens=max_ngram_tokens):
            pass
        passages = {
            "model": notes_to_array(result.generated),
            "true": quantized(prompt.truth),
            "ngram": notes_to_array(tokenizer.decode(prompt_ids + new_ids)[len(prompt.notes):]),
            "other_piece": quantized(prompt.other),
        }
        reference = features(quantized(prompt.notes), prompt_seconds)
        for source, notes in passages.items():
            scores[source].append(compare(reference, features(notes, seconds)))
            copies[source] += copied(notes, index)
            counts[source].append(len(notes))

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    return {
        "split": split,
        "prompts": len(prompts),
        "prompt_seconds": prompt_seconds,
        "seconds": seconds,
        "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p, "min_p": sampling.min_p},
        "similarity_to_prompt": {
            source: {metric: mean([s[metric] for s in rows]) for metric in rows[0]} for source, rows in scores.items()
        },
        "copy_rate": {source: found / total if total else None for source, (found, total) in copies.items()},
        "copy_ngram_notes": COPY_NGRAM,
        "notes_per_continuation": {source: float(np.mean(c)) for source, c in counts.items()},
        "empty_continuations": {source: int(sum(c == 0 for c in cs)) for source, cs in counts.items()},
        "seed": seed,
    }
