"""The piano LM recipe: next-token prediction on ASAP performances and POP909 arrangements.

Data: ASAP's human performances (expressive timing, velocities, sustain pedal; its quantized
`midi_score.mid` files are left out) and POP909 songs with all three tracks (melody, bridge,
piano) played as one piano part, since together they are the song's piano arrangement, which is
what a user's continuation prompt looks like. Train windows come from the train split, validation
from val; the model card's numbers are on test. Splits are piece-disjoint (`data.splits`).
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pianoapp.data.sequences import Augment, TokenWindows, corpus_items, corpus_pieces
from pianoapp.evaluate.lm import KINDS, evaluate_lm, token_nll
from pianoapp.models.registry import build, get_config
from pianoapp.tokenizer import Tokenizer
from pianoapp.train.trainer import TrainConfig

COLLECTIONS = ("asap", "pop909")


def lm_items(split: str, *, data_dir: Path | None = None, max_items: int = 0) -> list:
    """The corpus items the LM learns from in one split (see `corpus_items`)."""
    return corpus_items(COLLECTIONS, split, data_dir=data_dir, max_items=max_items)


def lm_pieces(split: str, *, data_dir: Path | None = None, max_items: int = 0) -> list[np.ndarray]:
    """The notes of each readable file of `lm_items`, empty files left out."""
    return corpus_pieces(COLLECTIONS, split, data_dir=data_dir, max_items=max_items)


class LMRecipe:
    unit = "tokens"

    def __init__(self, name: str, config: TrainConfig, *, data_dir: Path | None = None):
        self.name, self.config, self.data_dir = name, config, data_dir
        self.tokenizer = Tokenizer()
        self.model_config = get_config(name, vocab_size=self.tokenizer.vocab_size)
        self._val: list[torch.Tensor] | None = None

    def _pieces(self, split: str) -> list[np.ndarray]:
        return lm_pieces(split, data_dir=self.data_dir, max_items=self.config.max_items)

    def build_model(self) -> nn.Module:
        return build(self.model_config)

    def dataset(self) -> TokenWindows:
        return TokenWindows(self._pieces("train"), self.tokenizer, context_len=self.model_config.context_len,
                            seed=self.config.seed, augment=Augment())

    def loss(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        nll, real = token_nll(model, batch, self.tokenizer.pad_id)
        tokens = int(real.sum())
        return (nll * real).sum() / max(tokens, 1), tokens

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Mean NLL per token on fixed, unaugmented val windows."""
        if self._val is None:
            windows = TokenWindows(self._pieces("val"), self.tokenizer, context_len=self.model_config.context_len,
                                   seed=0, augment=None)
            self._val = [windows[i] for i in range(self.config.eval_windows)]
        device = next(model.parameters()).device
        total, tokens = 0.0, 0
        for i in range(0, len(self._val), self.config.batch_size):
            batch = torch.stack(self._val[i : i + self.config.batch_size]).to(device)
            nll, real = token_nll(model, batch, self.tokenizer.pad_id)
            total += float((nll * real).sum())
            tokens += int(real.sum())
        return {"val_loss": total / max(tokens, 1)}

    def checkpoint_extra(self) -> dict:
        return {"tokenizer": self.tokenizer.to_dict(), "data": {"collections": list(COLLECTIONS)}}

    def report(self, model_dir: Path) -> tuple[dict, str]:
        """Test-split NLL against the n-gram baseline, and the card's data section."""
        result = evaluate_lm(model_dir, data_dir=self.data_dir, split="test", max_windows=self.config.eval_windows,
                             max_items=self.config.max_items)
        counts = {split: len(lm_items(split, data_dir=self.data_dir, max_items=self.config.max_items))
                  for split in ("train", "val", "test")}
        rows = [("all", result), *result["by_kind"].items()]
        table = "\n".join(
            f"| {kind} | {r['tokens']:,} | {r['nll']:.3f} | {r['ngram_nll']:.3f} | {r['ratio']:.3f} |" for kind, r in rows
        )
        files = ", ".join(f"{split} {n:,}" for split, n in counts.items())
        tok = self.tokenizer
        text = f"""## Data

ASAP human performances (Disklavier, sustain pedal folded into durations) and POP909 songs (melody,
bridge and piano tracks as one piano part). Piece-disjoint splits; files per split: {files}.
Training samples are random windows of {self.model_config.context_len} tokens, augmented by ±5
semitones, ±20% tempo and ±10 velocity (as Aria); tokenizer version {tok.VERSION}, {tok.vocab_size} tokens.

## Evaluation ({result['split']} split, {result['windows']} unaugmented windows, seed {result['seed']})

NLL per token (nats) of this model and of an interpolated Kneser-Ney 4-gram (normalised over the
token kind the grammar allows next) fit on {result['ngram']['train_windows']} training windows; a ratio
below 1 means the model beats the n-gram.

| tokens | count | model NLL | 4-gram NLL | ratio |
|---|---|---|---|---|
{table}
"""
        metrics = {f"test_{k}": result[k] for k in ("nll", "ngram_nll", "ratio", "perplexity")}
        metrics.update({f"test_nll_{kind}": result["by_kind"][kind]["nll"] for kind in KINDS
                        if kind in result["by_kind"]})
        return metrics, text
