"""How well the piano LM predicts held-out music: NLL per token on val/test windows, overall and by
token kind (note, onset, dur, time), against an interpolated Kneser-Ney n-gram fit on training windows.

A ratio (LM NLL / n-gram NLL) below 1 means the transformer has learned more than local statistics.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("note", "onset", "dur", "time")


def token_nll(model: nn.Module, batch: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL (B, T) of each next token in padded sequences (B, T + 1), and the mask of real targets."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits, _ = model(inputs)
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view_as(targets), targets != pad_id


class KneserNey:
    """Interpolated Kneser-Ney n-gram model over token ids.

    Every sequence is read as if preceded by `order - 1` start symbols (id `vocab_size`), and
    its first token (<S>) is context, never predicted. One absolute discount per order,
    D = n1 / (n1 + 2 n2) from the counts of counts.

    `classes` (one id per token) makes the model grammar-aware: the unigram and uniform levels
    are normalised within the target's class, so when the previous token decides which class
    comes next (note -> onset -> dur -> note/time), no probability is spent on impossible tokens.
    Without it, every token is one class and the unigram level backs off to uniform.
    """

    def __init__(self, order: int = 4, classes: np.ndarray | None = None):
        self.order, self.classes = order, classes

    # Keys put the target in the lowest digit: key = w + base * (h_{-1} + base * (h_{-2} + ...)),
    # so a k-gram's history key is key // base and its (k-1)-gram suffix is key % base**(k-1).

    def _grams(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """For orders 1..N, the key of each target's k-gram (its k - 1 predecessors and itself)."""
        pad = self.order - 1
        per_order: list[list[np.ndarray]] = [[] for _ in range(self.order)]
        for seq in seqs:
            s = np.concatenate([np.full(pad, self.start, dtype=np.int64), np.asarray(seq, dtype=np.int64)])
            n_targets = len(seq) - 1
            key = np.zeros(n_targets, dtype=np.int64)
            for k in range(1, self.order + 1):  # grow the history one token to the left at a time
                key = key + s[pad + 1 - (k - 1) : pad + 1 - (k - 1) + n_targets] * self.base ** (k - 1)
                per_order[k - 1].append(key)
        return [np.concatenate(keys) if keys else np.zeros(0, np.int64) for keys in per_order]

    def _group(self, k: int, keys: np.ndarray) -> np.ndarray:
        """What a k-gram's probability is normalised over: its history, or for unigrams its class."""
        return self.class_of[keys] if k == 1 else keys // self.base

    def fit(self, seqs: list[list[int]], vocab_size: int) -> "KneserNey":
        self.vocab_size, self.start, self.base = vocab_size, vocab_size, vocab_size + 1
        self.class_of = np.zeros(vocab_size, np.int64) if self.classes is None else np.asarray(self.classes)
        self.class_size = np.bincount(self.class_of)
        grams = self._grams(seqs)
        self.tables = []  # per order, lowest first: (keys, counts, groups, totals, types, discount)
        for k in range(self.order, 0, -1):
            if k == self.order:
                keys, counts = np.unique(grams[k - 1], return_counts=True)
            else:  # continuation counts: how many distinct tokens precede each k-gram
                keys, counts = np.unique(keys % self.base**k, return_counts=True)
            n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
            discount = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
            groups, inverse = np.unique(self._group(k, keys), return_inverse=True)
            totals, types = np.bincount(inverse, weights=counts), np.bincount(inverse)
            self.tables.insert(0, (keys, counts, groups, totals, types, discount))
        return self

    def nll(self, seqs: list[list[int]]) -> np.ndarray:
        """-log P(token | history) of every token after the first, all sequences concatenated."""
        return -np.log(self._prob(self._grams(seqs)))

    def next_probs(self, history: list[int]) -> np.ndarray:
        """P(w | history) for every token w, each normalised within its class (sampling masks
        all but one class)."""
        context = [self.start] * (self.order - 1) + list(history)
        key = np.arange(self.vocab_size, dtype=np.int64)
        grams = [key]
        for k in range(1, self.order):
            key = key + context[-k] * self.base**k
            grams.append(key)
        return self._prob(grams)

    def _prob(self, grams: list[np.ndarray]) -> np.ndarray:
        """P(target | history) for the k-gram keys of each target, orders 1..N."""
        prob = 1.0 / self.class_size[self.class_of[grams[0]]]
        for k in range(1, self.order + 1):
            keys, counts, groups, totals, types, discount = self.tables[k - 1]
            count = _lookup(keys, counts, grams[k - 1])
            group = self._group(k, grams[k - 1])
            total, n_types = _lookup(groups, totals, group), _lookup(groups, types, group)
            mixed = (np.maximum(count - discount, 0) + discount * n_types * prob) / np.maximum(total, 1)
            prob = np.where(total > 0, mixed, prob)
        return prob


def grammar_classes(tokenizer) -> np.ndarray:
    """Token classes the grammar chooses between: onsets (after a note), durations (after an
    onset), and everything that may start a group (notes, <T>, specials)."""
    kinds = [tokenizer.token_kind(i) for i in range(tokenizer.vocab_size)]
    return np.array([{"onset": 1, "dur": 2}.get(kind, 0) for kind in kinds])


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[keys == q] for each query, 0 where the key is absent (keys sorted)."""
    if len(keys) == 0:
        return np.zeros(len(queries))
    at = np.clip(np.searchsorted(keys, queries), 0, len(keys) - 1)
    return np.where(keys[at] == queries, values[at], 0).astype(np.float64)


def token_windows(pieces: list[np.ndarray], tokenizer, *, context_len: int, n: int, seed: int) -> list[list[int]]:
    """`n` unaugmented windows of at most `context_len + 1` ids, drawn as training draws them."""
    from pianoapp.data.sequences import TokenWindows

    source = TokenWindows(pieces, tokenizer, context_len=context_len, seed=seed, augment=None)
    return [source.window(i)[: context_len + 1] for i in range(n)]


def evaluate_lm(
    model_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    seed: int = 0,
    max_windows: int = 200,
    ngram_windows: int = 2000,
    max_items: int = 0,
    batch_size: int = 8,
) -> dict:
    """NLL per token of the model in model_dir on `max_windows` windows of the split, by token
    kind, beside a 4-gram Kneser-Ney fit on `ngram_windows` training windows of the same corpus.
    The same arguments give the same numbers."""
    from pianoapp.models.checkpoint import load_config, load_model
    from pianoapp.tokenizer import Tokenizer
    from pianoapp.train.lm import lm_pieces

    doc = load_config(model_dir)
    tokenizer = Tokenizer.from_dict(doc["tokenizer"])
    model = load_model(model_dir)
    context_len = model.config.context_len
    data_dir = Path(data_dir) if data_dir else None

    def windows(which: str, n: int) -> list[list[int]]:
        return token_windows(lm_pieces(which, data_dir=data_dir, max_items=max_items), tokenizer,
                             context_len=context_len, n=n, seed=seed)

    held_out = windows(split, max_windows)
    ngram = KneserNey(order=4, classes=grammar_classes(tokenizer))
    ngram.fit(windows("train", ngram_windows), tokenizer.vocab_size)
    ngram_nll = ngram.nll(held_out)

    device = next(model.parameters()).device
    model_nll = []
    with torch.inference_mode():
        for i in range(0, len(held_out), batch_size):
            chunk = held_out[i : i + batch_size]
            width = max(len(w) for w in chunk)
            batch = torch.tensor([w + [tokenizer.pad_id] * (width - len(w)) for w in chunk], device=device)
            nll, real = token_nll(model, batch, tokenizer.pad_id)
            model_nll.extend(nll[j][real[j]].cpu().numpy() for j in range(len(chunk)))
    model_nll = np.concatenate(model_nll)
    kinds = np.array([tokenizer.token_kind(t) for w in held_out for t in w[1:]])

    def summary(mask: np.ndarray) -> dict:
        nll, base = float(model_nll[mask].mean()), float(ngram_nll[mask].mean())
        return {"tokens": int(mask.sum()), "nll": nll, "ngram_nll": base, "ratio": nll / base}

    everything = summary(np.ones(len(kinds), dtype=bool))
    return {
        "split": split,
        "windows": len(held_out),
        **everything,
        "perplexity": math.exp(everything["nll"]),
        "by_kind": {kind: summary(kinds == kind) for kind in KINDS if (kinds == kind).any()},
        "ngram": {"order": ngram.order, "train_windows": ngram_windows,
                  "smoothing": "interpolated Kneser-Ney, normalised within grammar classes"},
        "seed": seed,
    }
