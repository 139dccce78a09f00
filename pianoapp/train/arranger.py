"""The arranger recipe (BOSSA's two stages on POP909): lead sheet + style reference → accompaniment.

Data: `data.arrangement` pairs (4-bar segments, 2-bar hop, random transposition of the lead sheet
and accompaniment together); each segment's style reference is another segment of the same song's
PIANO track (untransposed), rendered through the render cache (`data.segments.render_pieces`, the
matcher's training soundfonts) and augmented like the matcher's audio (gain, EQ, reverb, noise).
`ArrangementPairs.reference` draws from every segment of the song; rendering all of those would take
longer than the training run on a CPU, so references come from a pool, the segments starting every
POOL_EVERY_BARS bars (`pooled_reference`), and those the run will use are rendered before it starts.

Stage 1 (the first `stage1_steps` steps): Q-Former pre-training against the target accompaniment's
tokens (its symbolic stream reads `<S>` and the segment's `<acc>` sections), with BOSSA's three
objectives summed: contrastive (similarity = max over queries of the cosine with the `<S>` output,
symmetric InfoNCE over the batch), matching (binary, on the positive pair and the batch's most
similar other accompaniment: BLIP-2's hard negative, taken rather than sampled, one side only), and
generative (the symbolic stream predicts the accompaniment tokens reading the queries), and VICReg's
variance term on both contrastive embeddings, which keeps the Q-Former from collapsing to one output
for every reference before the contrastive loss has found what tells them apart. Stage 2:
LoRA, the new token rows, the Q-Former and the prefix projection learn to write the accompaniment
(loss on the target tokens only). Each example states its accompaniment's own style
(`data.arrangement.Style`) after `<S>`, so the LM learns to write in a stated style; the app states
the reference's. The reference and the style are dropped for `reference_dropout` of the examples,
which trains the null prefix, the model's default style.

Simplifications: the Q-Former starts from random weights (BOSSA: MusicBERT), its symbolic stream
embeds tokens with the frozen LM's table; one hard negative per reference; one learning-rate schedule
across both stages, capped at `stage1_lr` in stage 1 (at the stage-2 rate the contrastive loss
found nothing in 700 steps; at 3e-4 it did). On a CPU the passes run under bf16 autocast (the trainer autocasts on CUDA only):
with AMX, the frozen LM's forward and backward take under half the fp32 time. Stage 1 calls the
Q-Former's streams directly, past a DDP wrapper, so it is sized for one process.
"""

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pianoapp.data.arrangement import (
    BAR,
    HOP_BARS,
    SEGMENT_BARS,
    TRANSPOSE,
    ArrangementCodec,
    ArrangementExamples,
    ArrangementPairs,
    Style,
    load_songs,
)
from pianoapp.data.attributes import MAJOR_TONICS
from pianoapp.data.augment import AudioAugment, augment_audio
from pianoapp.data.segments import TRAIN_SOUNDFONTS, Render, render_pieces
from pianoapp.data.sequences import array_to_notes
from pianoapp.errors import BadInputError
from pianoapp.losses import spread_shortfall
from pianoapp.models.arranger import REFERENCE_SECONDS, Arranger, reference_clip
from pianoapp.models.registry import build, get_config
from pianoapp.tokenizer import Tokenizer
from pianoapp.train.trainer import TrainConfig


@dataclass
class ArrangerTrainConfig(TrainConfig):
    stage1_steps: int = 200  # Q-Former pre-training steps before the arrangement stage
    stage1_lr: float = 3e-4  # stage 1's learning-rate cap
    context_len: int = 448  # tokens per example (whole bars; 99% of 4-bar segments fit)
    max_symbolic: int = 256  # stage 1: accompaniment tokens the Q-Former's symbolic stream reads
    reference_dropout: float = 0.15  # stage 2: share of examples arranged without their reference
    # Stage 2: share of transposed examples whose reference is their own segment, in its written key:
    # its rhythm, register and density are the target's, its notes are not.
    self_reference: float = 0.0
    augment: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.stage1_steps <= self.max_steps:
            raise BadInputError(f"Training setting stage1_steps must be between 0 and max_steps "
                                f"({self.max_steps}).")
        if not 0 <= self.reference_dropout < 1:
            raise BadInputError("Training setting reference_dropout must be in [0, 1).")
        if not 0 <= self.self_reference <= 1:
            raise BadInputError("Training setting self_reference must be in [0, 1].")

    def lr_at(self, step: int) -> float:
        base = super().lr_at(step)
        return min(base, self.stage1_lr) if step < self.stage1_steps else base


# The held-out losses, each the target NLL with: the reference and its style, no reference and no
# style, another example's reference and style, the reference and the target's own style.
HELD_OUT = ("loss", "loss_noref", "loss_shuffled", "loss_own_style")
POOL_EVERY_BARS = 32  # references start on these bars: about 2.6 per POP909 song


def pooled_reference(pairs: ArrangementPairs, j: int, rng: np.random.Generator) -> int:
    """`pairs.reference` drawn from the song's pool (segments starting every POOL_EVERY_BARS bars)
    where the pool holds a segment apart from j; else from the whole song."""
    rows = pairs.segments
    song, first = rows[j]
    pool = np.flatnonzero((rows[:, 0] == song) & (rows[:, 1] % POOL_EVERY_BARS == 0))
    apart = pool[np.abs(rows[pool, 1] - first) >= pairs.bars]
    return int(rng.choice(apart)) if len(apart) else pairs.reference(j, rng)


def render_references(pairs: ArrangementPairs, segments: set[int]) -> dict[int, Render]:
    """The first REFERENCE_SECONDS of the PIANO track of each segment, rendered (cached)."""
    order = sorted(segments)
    renders = render_pieces([pairs.piano(j) for j in order], soundfonts=TRAIN_SOUNDFONTS, per_piece=1,
                            seconds=REFERENCE_SECONDS)
    return dict(zip(order, renders))


def reference_audio(render: Render) -> np.ndarray:
    return reference_clip(render.audio(0, render.samples()))


class ReferencedExamples(Dataset):
    """`ArrangementExamples` with each item's style reference (`pooled_reference`) as audio and its
    training stage: item i is the example with "reference" replaced and {"audio": float32
    (REFERENCE_SAMPLES,), "stage": 1 or 2, "drop": bool} added (a dropped reference drops the
    stated style too: `ArrangementCodec.restyle`), a pure function of (seed, i);
    stage 1 for the first `stage1_items` items. In stage 2, a share `own` of the transposed items
    take their own segment as reference (`ArrangerTrainConfig.self_reference`). `renders` must hold
    every reference `references(n)` names."""

    def __init__(self, examples: ArrangementExamples, *, seed: int, augment: AudioAugment | None,
                 stage1_items: int, drop: float, own: float = 0.0):
        self.examples, self.seed, self.augment = examples, seed, augment
        self.stage1_items, self.drop, self.own = stage1_items, drop, own
        self.renders: dict[int, Render] = {}

    def _draw(self, i: int) -> tuple[dict, int, np.random.Generator]:
        item = self.examples[i]
        rng = np.random.default_rng([self.seed, i, 1])  # apart from the stream the example drew from
        reference = pooled_reference(self.examples.pairs, item["segment"], rng)
        # Its own stream, so that recipes without own references draw exactly what they drew before.
        own = np.random.default_rng([self.seed, i, 2]).random() < self.own
        if own and i >= self.stage1_items and item["semitones"]:
            reference = item["segment"]
        return item, reference, rng

    def references(self, n: int) -> set[int]:
        """The reference segments of items 0..n-1."""
        return {self._draw(i)[1] for i in range(n)}

    def __getitem__(self, i: int) -> dict:
        item, reference, rng = self._draw(i)
        audio = reference_audio(self.renders[reference])
        if self.augment is not None:
            audio = augment_audio(audio, rng, self.augment)
        drop = bool(rng.random() < self.drop)
        if drop:  # the default style: no reference and no style stated
            item["ids"], item["target"] = self.examples.codec.restyle(item["ids"], item["target"], None)
        return {**item, "reference": reference, "audio": audio, "stage": 1 if i < self.stage1_items else 2,
                "drop": drop}


class ArrangerRecipe:
    unit = "segments"

    def __init__(self, name: str, config: ArrangerTrainConfig, *, data_dir: Path | None = None):
        self.name, self.config, self.data_dir = name, config, data_dir
        self.codec = ArrangementCodec(Tokenizer())
        self.model_config = get_config(name, vocab_size=self.codec.tokenizer.vocab_size)
        self._fixed: dict[str, list[dict]] = {}

    def _pairs(self, split: str) -> ArrangementPairs:
        pairs = ArrangementPairs(load_songs(split, data_dir=self.data_dir, max_songs=self.config.max_items))
        if not len(pairs):
            raise BadInputError(f"The {split} split has no segments in which the piano plays.")
        return pairs

    def build_model(self) -> nn.Module:
        model = build(self.model_config)
        init_new_rows(model, self.codec)
        return model

    def dataset(self) -> ReferencedExamples:
        c = self.config
        pairs = self._pairs("train")
        examples = ArrangementExamples(pairs, self.codec, context_len=c.context_len, seed=c.seed)
        per_step = c.batch_size * c.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
        data = ReferencedExamples(examples, seed=c.seed, augment=AudioAugment() if c.augment else None,
                                  stage1_items=c.stage1_steps * per_step, drop=c.reference_dropout,
                                  own=c.self_reference)
        print(f"choosing the style references of {c.max_steps * per_step:,} examples", file=sys.stderr)
        data.renders = render_references(pairs, data.references(c.max_steps * per_step))
        return data

    def _autocast(self, device: torch.device):
        cpu = device.type == "cpu" and self.config.amp
        return torch.autocast("cpu", dtype=torch.bfloat16) if cpu else nullcontext()

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        arranger: Arranger = getattr(model, "module", model)
        ids, target = _trimmed(batch["ids"], batch["target"], self.codec.tokenizer.pad_id)
        with self._autocast(ids.device):
            frames = arranger.frames(batch["audio"])
            if int(batch["stage"][0]) == 1:
                return sum(self._pretraining(arranger, frames, ids, target).values()), ids.shape[0]
            logits = model(ids[:, :-1], frames, drop=batch["drop"])
        return _target_nll(logits, ids, target), ids.shape[0]

    def _pretraining(self, arranger: Arranger, frames: torch.Tensor, ids: torch.Tensor,
                     target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 1's three losses (see the module docstring)."""
        q = arranger.qformer
        tokens, padding = self._accompaniment_tokens(ids, target)
        table = arranger.lm.tok_emb.weight.detach()
        emb = F.embedding(tokens, table)
        style, symbolic = style_embeddings(arranger, frames, emb, padding)
        sim = style_similarity(style, symbolic)
        labels = torch.arange(len(sim), device=sim.device)
        logits = sim * q.logit_scale.exp().clamp(max=100)
        logits = logits.float()
        contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        with torch.no_grad():
            negative = sim.float().fill_diagonal_(-torch.inf).argmax(dim=1)
        match = q.joint(torch.cat([frames, frames]), torch.cat([emb, emb[negative]]),
                        torch.cat([padding, padding[negative]]))
        matching = F.binary_cross_entropy_with_logits(
            match.float(), torch.cat([torch.ones_like(labels), torch.zeros_like(labels)]).float())
        features = q.causal(frames, emb[:, :-1])
        scores = (features @ table.T.to(features.dtype)).float()
        nll = F.cross_entropy(scores.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        nll = nll.view(len(tokens), -1)
        real = ~padding[:, 1:]
        generative = (nll * real).sum() / real.sum().clamp(min=1)
        # From random weights, 8 pairs a batch, the contrastive loss alone is lowered fastest by giving every
        # reference and accompaniment one embedding (spread 0.20 -> 0.03 of their size in 50 steps).
        spread = spread_shortfall(style.flatten(1)) + spread_shortfall(symbolic)
        return {"contrastive": contrastive, "matching": matching, "generative": generative, "spread": spread}

    def _accompaniment_tokens(self, ids: torch.Tensor,
                              target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`<S>` and each example's target tokens (its `<acc>` sections), cut to max_symbolic and
        right-padded: (tokens (B, L), padding (B, L) True at padding)."""
        t = self.codec.tokenizer
        keep = self.config.max_symbolic - 1
        rows = [[t.bos_id] + row[mask].tolist()[:keep] for row, mask in zip(ids, target)]
        length = max(map(len, rows))
        tokens = torch.tensor([r + [t.pad_id] * (length - len(r)) for r in rows], device=ids.device)
        return tokens, tokens == t.pad_id

    def _fixed_examples(self, split: str) -> list[dict]:
        """`eval_windows` unaugmented, untransposed examples of a split, each with its segment, its clean
        reference ("audio"), the next example's ("other_audio") and its (ids, target) stating each style
        that HELD_OUT measures."""
        if split not in self._fixed:
            pairs = self._pairs(split)
            examples = ArrangementExamples(pairs, self.codec, context_len=self.config.context_len, seed=0,
                                           transpose=False)
            items = [examples[i] for i in range(self.config.eval_windows)]
            renders = render_references(pairs, {item["reference"] for item in items})
            styles = [Style.of(array_to_notes(pairs.piano(item["reference"]))) for item in items]
            fixed = []
            for k, item in enumerate(items):
                other = (k + 1) % len(items)
                own = (item["ids"], item["target"])
                fixed.append({"segment": item["segment"], "audio": reference_audio(renders[item["reference"]]),
                              "other_audio": reference_audio(renders[items[other]["reference"]]),
                              "loss": self.codec.restyle(*own, styles[k]),
                              "loss_noref": self.codec.restyle(*own, None),
                              "loss_shuffled": self.codec.restyle(*own, styles[other]),
                              "loss_own_style": own})
            self._fixed[split] = fixed
        return self._fixed[split]

    @torch.no_grad()
    def _held_out(self, model: nn.Module, split: str) -> dict[str, float]:
        """Target NLL with each example's reference (and its style), with none (the null prefix, no
        style), with another example's, and with the reference's audio but the target's own style
        (what a perfect style reading would give); and how often the Q-Former finds each reference's
        accompaniment in the pool."""
        arranger: Arranger = getattr(model, "module", model)
        device = next(arranger.parameters()).device
        items = self._fixed_examples(split)
        totals = dict.fromkeys(HELD_OUT, 0.0)
        pad = self.codec.tokenizer.pad_id
        sims = []
        for start in range(0, len(items), self.config.batch_size):
            chunk = items[start : start + self.config.batch_size]
            with self._autocast(device):
                frames, other = (arranger.frames(torch.from_numpy(np.stack([item[key] for item in chunk])).to(device))
                                 for key in ("audio", "other_audio"))
                for key, f in zip(HELD_OUT, (frames, None, other, frames)):
                    ids, target = (torch.stack([item[key][n] for item in chunk]).to(device) for n in (0, 1))
                    ids, target = _trimmed(ids, target, pad)
                    totals[key] += float(_target_nll(arranger(ids[:, :-1], f), ids, target)) * len(chunk)
            sims.append((frames, *self._accompaniment_tokens(ids, target)))
        # Retrieval over the whole pool: every reference against every accompaniment.
        with self._autocast(device):
            frames = torch.cat([f for f, _, _ in sims])
            length = max(t.shape[1] for _, t, _ in sims)
            tokens = torch.cat([F.pad(t, (0, length - t.shape[1]), value=pad) for _, t, _ in sims])
            emb = F.embedding(tokens, arranger.lm.tok_emb.weight)
            sim = style_similarity(*style_embeddings(arranger, frames, emb, tokens == pad))
        r1 = float((sim.argmax(dim=1) == torch.arange(len(sim), device=sim.device)).float().mean())
        return {**{k: v / len(items) for k, v in totals.items()}, "style_r1": r1, "pool": float(len(items))}

    def validate(self, model: nn.Module) -> dict[str, float]:
        return {f"val_{k}": v for k, v in self._held_out(model, "val").items()}

    def checkpoint_extra(self) -> dict:
        c = self.config
        return {"tokenizer": self.codec.tokenizer.to_dict(),
                "data": {"collections": ["pop909"], "segment_bars": SEGMENT_BARS, "hop_bars": HOP_BARS,
                         "transpose": list(TRANSPOSE), "reference_seconds": REFERENCE_SECONDS,
                         "soundfonts": list(TRAIN_SOUNDFONTS)},
                "train": {k: getattr(c, k)
                          for k in ("stage1_steps", "stage1_lr", "context_len", "reference_dropout", "self_reference",
                                    "augment")}}

    def report(self, model_dir: Path) -> tuple[dict, str]:
        """Held-out NLL with, without and with another reference on the test split, and the data."""
        from pianoapp.models.checkpoint import load_model

        test = self._held_out(load_model(model_dir, device="cpu"), "test")
        counts = {split: len(load_songs(split, data_dir=self.data_dir, max_songs=self.config.max_items))
                  for split in ("train", "val", "test")}
        songs = ", ".join(f"{split} {n:,}" for split, n in counts.items())
        c, m = self.config, self.model_config
        new_rows = m.vocab_size - self.codec.tokenizer.extra_offset
        shift = f"{TRANSPOSE[0]}..+{TRANSPOSE[1]}"
        own = (f" and, for {c.self_reference:.0%} of the transposed ones, replaced by the segment itself in its "
               "written key (its rhythm, register and density, not its notes)") if c.self_reference else ""
        text = f"""## Model

BOSSA on Pianoapp's parts: the frozen piano LM `models/{m.lm}` with LoRA rank {m.lora_rank}
(alpha {m.lora_alpha:g}) on its attention projections and {new_rows} trainable embedding rows for
the arrangement tokens (chord roots and basses start as the mean embedding of their pitch class's
notes, `<bar>` as `<T>`); a Q-Former ({m.qformer.n_layers} layers, {m.qformer.d_model} wide,
{m.qformer.n_queries} queries) over the frozen audio encoder of `models/{m.audio}` (its frames
standardised per unit with running statistics), projected into the LM's embedding space as a
{m.qformer.n_queries}-position prefix; a learned null prefix for no reference. This folder holds
only the trained parts; loading composes them with the two frozen models.

## Data

POP909 lead sheets (MELODY track, chord annotations, beat-annotated bars) and PIANO tracks, in
{SEGMENT_BARS}-bar segments with a {HOP_BARS}-bar hop, transposed by {shift} semitones. Each
segment's style reference is another segment of the same song (from a pool: segments starting
every {POOL_EVERY_BARS} bars), its first {REFERENCE_SECONDS:g} s rendered with
{' or '.join(TRAIN_SOUNDFONTS)} and augmented (gain, EQ, reverb, noise). Song-disjoint splits;
songs per split: {songs}.

## Training

Stage 1, {c.stage1_steps} steps at a learning rate of at most {c.stage1_lr:g}: Q-Former pre-training (contrastive + matching + generative
against the target accompaniment's tokens, and VICReg's variance term against collapse). Stage 2,
{c.max_steps - c.stage1_steps} steps: LoRA, new rows, Q-Former and projection on the accompaniment
tokens only, each example stating its accompaniment's own style after `<S>` (`Style`:
notes a second, median pitch, notes per onset, in bins), the reference and the style dropped for
{c.reference_dropout:.0%} of the examples{own}. Examples of at most {c.context_len} tokens (whole bars).

## Held-out loss ({len(self._fixed_examples('test'))} test segments, untransposed)

Target-token NLL (nats): with the segment's style reference and the style read from it
{test['loss']:.3f}, with no reference and no style {test['loss_noref']:.3f}, with another segment's reference
and style {test['loss_shuffled']:.3f}; with the reference but the accompaniment's own style stated (what
a perfect reading of the style would give) {test['loss_own_style']:.3f}.
The Q-Former finds each reference's accompaniment among the {int(test['pool'])} in the pool
{test['style_r1']:.0%} of the time (chance {1 / test['pool']:.0%}).
"""
        return {f"test_{k}": v for k, v in test.items() if k != "pool"}, text


@torch.no_grad()
def init_new_rows(arranger: Arranger, codec: ArrangementCodec) -> None:
    """Start the arrangement tokens where the frozen LM can read them: each chord root and bass as
    the mean embedding of the note tokens of its pitch class (the root's from C2 to C6, the bass's
    from C1 to C4), `<bar>` as the segment token `<T>`, each rescaled to the note embeddings' mean
    norm; the other new rows keep their random start. (From random rows, 550 steps taught the model
    little of what a chord symbol means: generated accompaniments matched their chords 10-20% of the time.)"""
    t = codec.tokenizer
    base, extra = arranger.lm.tok_emb.base, arranger.lm.tok_emb.extra
    notes = base[t.note_offset : t.onset_offset]
    notes = notes.view(-1, t.config.velocity_bins, base.shape[1])  # (pitch, velocity bin, d)
    pitches = torch.arange(t.config.pitch_min, t.config.pitch_max + 1)
    norm = base[t.note_offset : t.onset_offset].norm(dim=1).mean()

    def put(token: str, row: torch.Tensor) -> None:
        extra[t.token_to_id[token] - t.extra_offset] = row * norm / row.norm()

    for pc, name in enumerate(MAJOR_TONICS):
        for kind, (lo, hi) in (("root", (36, 84)), ("bass", (24, 60))):
            chosen = (pitches % 12 == pc) & (pitches >= lo) & (pitches <= hi)
            put(f"{kind}:{name}", notes[chosen].mean(dim=(0, 1)))
    put(BAR, base[t.time_id])


def style_embeddings(arranger: Arranger, frames: torch.Tensor, tokens: torch.Tensor,
                     padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The contrastive space's embeddings: each query output's (B, K, e) and the symbolic stream's
    `<S>` output's (B, e), not normalised."""
    q = arranger.qformer
    return q.style_proj(q(frames)).float(), q.symbolic_proj(q.symbolic(tokens, padding)[:, 0]).float()


def style_similarity(style: torch.Tensor, symbolic: torch.Tensor) -> torch.Tensor:
    """BOSSA's audio–symbolic similarity (B_audio, B_symbolic) of `style_embeddings`: the largest
    cosine between any query output and the symbolic stream's `<S>` output."""
    style, symbolic = F.normalize(style, dim=-1), F.normalize(symbolic, dim=-1)
    return torch.einsum("ike,je->ijk", style, symbolic).amax(dim=-1)


def _trimmed(ids: torch.Tensor, target: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch cut after its longest real sequence."""
    n = int((ids != pad_id).sum(dim=1).max())
    return ids[:, :n], target[:, :n]


def _target_nll(logits: torch.Tensor, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean NLL of the target tokens (ids[:, 1:] where target) under logits for ids[:, :-1]."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    nll = nll.view_as(ids[:, 1:])
    mask = target[:, 1:]
    return (nll * mask).sum() / mask.sum().clamp(min=1)

