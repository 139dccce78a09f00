"""The bind recipe: captions, audio and MIDI pulled into one space (PianoBind-style trimodal InfoNCE).

The audio and MIDI towers are the shipped matcher's, frozen, so each item's window embeddings are
computed once and cached (`item_features`): the opening of every item of POP909, ASAP (performances),
Nottingham and the music21 demo collection, rendered (data.segments' render cache; FluidR3_GM and
MuseScore_General alternating for training items, FluidR3_GM for val and test, as the matcher was
evaluated) and cut into the matcher's 4 s windows, each modality embedded by its tower. Training
then only runs the text tower (MiniLM + LoRA + projection) and the adapters.

A step draws `batch_size` distinct pieces, one item of each (distinct pieces: two performances of one
piece are never each other's negatives), a random run of 8–16 windows of that item (the same span in
both modalities) and one caption of it from the training pool of templates and wordings. Validation
ranks val items for held-out ("eval" pool) captions in pools of 199, as the test protocol does.

The recipe computes missing features when it needs them; `cache_all_features` fills the cache ahead
(2,839 items in 46 min on one thread of a busy 2-core CPU, 0.95 s per item, rendering included).
"""

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pianoapp.data.captions import captions
from pianoapp.data.corpora import Item, load_collection
from pianoapp.data.segments import COLLECTIONS, SEGMENT_SECONDS, TRAIN_SOUNDFONTS, render_pieces
from pianoapp.data.sequences import array_to_notes, corpus_items, load_pieces
from pianoapp.descriptors import PIECE_DIM, piece_descriptors
from pianoapp.errors import BadInputError
from pianoapp.evaluate.search import COMMAND, evaluate_search, headline, item_embeddings, pool_ranks
from pianoapp.evaluate.search import markdown as search_markdown
from pianoapp.losses import info_nce
from pianoapp.models.bind import LORA_TARGETS, BindOutput, matcher_id
from pianoapp.models.registry import build, get_config
from pianoapp.train.trainer import TrainConfig

FEATURES_VERSION = 1  # bump when what a cached item holds changes
EVAL_SOUNDFONT = TRAIN_SOUNDFONTS[0]  # val and test items are rendered with one soundfont
RENDER_CHUNK = 16  # items rendered per call: render_pieces renders this few in one process


def features_root() -> Path:
    """Cached window embeddings, one folder per matcher checkpoint (`models.bind.matcher_id`)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pianoapp"
    return cache / f"bind-features-v{FEATURES_VERSION}" / matcher_id().replace("/", "-")


@dataclass(frozen=True)
class ItemFeatures:
    """One item's opening through the frozen matcher, and what its notes say (for its captions)."""

    item: Item
    audio: np.ndarray  # (n, dim) float16: audio-tower embeddings of its rendered 4 s windows
    audio_start: np.ndarray  # (n,) float32: where each window starts
    midi: np.ndarray  # (m, dim) float16: MIDI-tower embeddings of its note windows
    midi_start: np.ndarray  # (m,) float32
    attributes: dict  # `note_attributes` of the whole piece


def bind_items(split: str, *, data_dir: Path | None = None) -> list[Item]:
    """The items of one split: the three training collections (ASAP performances only, as the matcher)
    and the music21 demo collection's items whose piece falls in that split."""
    from pianoapp.data.splits import split_of

    music21 = [item for item in load_collection("music21") if split_of(item.piece_id) == split]
    return corpus_items(COLLECTIONS, split, data_dir=data_dir) + music21


def item_features(items: list[Item], *, split: str, seconds: float, progress: bool = True) -> list[ItemFeatures]:
    """Features of `items` (computed and cached for those not cached yet); unreadable or silent items
    are left out. `split` picks the soundfonts (alternating for "train", one for val and test)."""
    soundfonts = TRAIN_SOUNDFONTS if split == "train" else (EVAL_SOUNDFONT,)
    folder = features_root()
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{FEATURES_VERSION}|{seconds}|{','.join(soundfonts)}".encode()
    keys = [hashlib.sha1(tag + Path(item.path).read_bytes()).hexdigest()[:24] for item in items]
    todo = [i for i, key in enumerate(keys) if not (folder / f"{key}.npz").is_file()]
    if todo:
        _compute([items[i] for i in todo], [folder / f"{keys[i]}.npz" for i in todo],
                 soundfonts=soundfonts, seconds=seconds, progress=progress)
    out = []
    for item, key in zip(items, keys, strict=True):
        with np.load(folder / f"{key}.npz", allow_pickle=False) as f:
            if len(f["audio"]) and len(f["midi"]):
                out.append(ItemFeatures(item, f["audio"], f["audio_start"], f["midi"], f["midi_start"],
                                        json.loads(str(f["attributes"]))))
    return out


def _compute(items: list[Item], paths: list[Path], *, soundfonts: tuple[str, ...], seconds: float,
             progress: bool) -> None:
    from tqdm import tqdm

    from pianoapp.data.attributes import note_attributes
    from pianoapp.services.match import audio_windows, matcher_model, note_windows

    model = matcher_model()
    last_start = seconds - SEGMENT_SECONDS + 1e-6  # windows wholly inside the opening
    bar = tqdm(total=len(items), desc="bind features", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    started = time.monotonic()
    for first in range(0, len(items), RENDER_CHUNK):
        chunk, outs = items[first:first + RENDER_CHUNK], paths[first:first + RENDER_CHUNK]
        pieces = load_pieces([Path(item.path) for item in chunk])
        readable = [k for k, piece in enumerate(pieces) if len(piece)]
        renders = render_pieces([pieces[k] for k in readable], soundfonts=soundfonts, per_piece=1, seconds=seconds)
        arrays = {k: None for k in range(len(chunk))}
        for k, render in zip(readable, renders, strict=True):
            with torch.inference_mode():
                audio, audio_start = audio_windows(render.audio(0, render.samples()), model)
                midi, midi_start = note_windows(render.notes, model)
            keep_a, keep_m = audio_start <= last_start, midi_start <= last_start
            attributes = {key: v.item() if isinstance(v, np.generic) else v
                          for key, v in note_attributes(array_to_notes(pieces[k])).items()}
            arrays[k] = {"audio": audio[keep_a].astype(np.float16), "audio_start": audio_start[keep_a],
                         "midi": midi[keep_m].astype(np.float16), "midi_start": midi_start[keep_m],
                         "attributes": np.array(json.dumps(attributes))}
        for k, path in enumerate(outs):
            empty = np.zeros((0, model.config.embed_dim), np.float16)
            fields = arrays[k] or {"audio": empty, "audio_start": np.zeros(0, np.float32), "midi": empty,
                                   "midi_start": np.zeros(0, np.float32), "attributes": np.array("{}")}
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            with open(tmp, "wb") as f:
                np.savez(f, **fields)
            os.replace(tmp, path)  # atomic: an interrupted pass leaves only whole files
        bar.update(len(chunk))
    bar.close()
    if progress:
        elapsed = time.monotonic() - started
        print(f"bind features: {len(items)} items in {elapsed:.0f} s ({elapsed / max(len(items), 1):.2f} s per item, "
              f"{torch.get_num_threads()} thread(s))", file=sys.stderr)


def cache_all_features(*, data_dir: Path | None = None, seconds: float) -> None:
    """Compute every split's features once (val and test first: evaluation needs them)."""
    for split in ("val", "test", "train"):
        item_features(bind_items(split, data_dir=data_dir), split=split, seconds=seconds)


# The recipe ----------------------------------------------------------------------------------------


@dataclass
class BindTrainConfig(TrainConfig):
    lora: bool = True  # false: the text backbone stays frozen (the "no LoRA" baseline)
    adapters: bool = True  # false: the matcher's window embeddings are used as they are
    descriptors: bool = True  # false: the MIDI tower reads its windows only (the "no descriptors" baseline)
    min_windows: int = 8  # a training example is a run of this many to max_windows consecutive windows
    max_windows: int = 16
    val_pool: int = 199  # validation ranks each val item against this many items (PianoBind's pool)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.min_windows <= self.max_windows:
            raise BadInputError("Training settings need 1 ≤ min_windows ≤ max_windows.")


class CaptionedRuns(Dataset):
    """Item i (step i // batch_size, row i % batch_size), a pure function of (seed, i): one item of the
    row's piece (pieces are shuffled per step, so a batch holds distinct pieces), a run of 8–16
    consecutive windows (the same seconds in both modalities, padded to max_windows), the piece's
    descriptors and one caption from the training pool: {"audio", "audio_mask", "midi", "midi_mask",
    "descriptors", "caption"}."""

    def __init__(self, features: list[ItemFeatures], *, seed: int, batch_size: int, min_windows: int,
                 max_windows: int):
        if not features:
            raise ValueError("no items to train on")  # callers check their data first
        self.features, self.seed, self.batch_size = features, seed, batch_size
        self.min_windows, self.max_windows = min_windows, max_windows
        by_piece: dict[str, list[int]] = {}
        for k, f in enumerate(features):
            by_piece.setdefault(f.item.piece_id, []).append(k)
        self.pieces = list(by_piece.values())

    def __getitem__(self, i: int) -> dict:
        step, row = divmod(i, self.batch_size)
        order = np.random.default_rng([self.seed, step]).permutation(len(self.pieces))
        piece = self.pieces[order[row % len(order)]]
        rng = np.random.default_rng([self.seed, i])
        f = self.features[piece[rng.integers(len(piece))]]
        length = int(rng.integers(self.min_windows, self.max_windows + 1))
        last = max(float(f.audio_start.max()), float(f.midi_start.max()))
        t0 = float(rng.integers(int(max(0.0, last - length + 1)) + 1))  # windows start on a 1 s grid
        example = {}
        for name, windows, starts in (("audio", f.audio, f.audio_start), ("midi", f.midi, f.midi_start)):
            run = windows[(starts >= t0) & (starts < t0 + length)]
            run = (run if len(run) else windows)[: self.max_windows]
            padded = np.zeros((self.max_windows, windows.shape[1]), np.float32)
            padded[: len(run)] = run
            example[name], example[f"{name}_mask"] = padded, np.arange(self.max_windows) < len(run)
        example["descriptors"] = piece_descriptors(f.attributes)
        example["caption"] = captions(f.item, f.attributes, n=1, seed=i, split="train")[0]
        return example


class BindRecipe:
    unit = "items"

    def __init__(self, name: str, config: BindTrainConfig, *, data_dir: Path | None = None):
        self.name, self.config, self.data_dir = name, config, data_dir
        overrides = {} if config.lora else {"lora_rank": 0}
        overrides |= {} if config.adapters else {"adapter_hidden": 0}
        overrides |= {} if config.descriptors else {"descriptor_hidden": 0}
        self.model_config = get_config(name, **overrides)
        self._val: tuple | None = None

    def features(self, split: str) -> list[ItemFeatures]:
        items = bind_items(split, data_dir=self.data_dir)
        if split != "train":  # val and test follow the protocol: the three training collections
            items = [item for item in items if item.collection in COLLECTIONS]
        if self.config.max_items:
            items = items[:: max(1, len(items) // self.config.max_items)][: self.config.max_items]
        return item_features(items, split=split, seconds=self.model_config.opening_seconds)

    def build_model(self) -> nn.Module:
        return build(self.model_config)

    def dataset(self) -> CaptionedRuns:
        c = self.config
        return CaptionedRuns(self.features("train"), seed=c.seed, batch_size=c.batch_size,
                             min_windows=c.min_windows, max_windows=c.max_windows)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        tokens = getattr(model, "module", model).tokenize(batch["caption"])
        out = model(tokens["input_ids"], tokens["attention_mask"], batch["audio"], batch["audio_mask"],
                    batch["midi"], batch["midi_mask"], batch["descriptors"])
        return trimodal_loss(out), len(batch["caption"])

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Held-out captions ("eval" pool, seed 0) of val items, each ranked in a pool of val_pool items."""
        if self._val is None:
            features = self.features("val")
            texts = [captions(f.item, f.attributes, n=1, seed=0, split="eval")[0] for f in features]
            self._val = features, texts
        features, texts = self._val
        scores = model.encode_texts(texts) @ item_embeddings(model, features).T
        ranks = pool_ranks(scores, [f.item.piece_id for f in features], pool=self.config.val_pool, seed=0)
        return {"val_r1": float(np.mean(ranks < 1)), "val_r10": float(np.mean(ranks < 10)),
                "val_median_rank": float(np.median(ranks + 1)), "val_temperature": float(1 / model.logit_scale.exp()),
                "val_pool": float(min(self.config.val_pool, len(features)))}

    def checkpoint_extra(self) -> dict:
        c = self.config
        return {"matcher": matcher_id(),
                "data": {"collections": [*COLLECTIONS, "music21"], "soundfonts": list(TRAIN_SOUNDFONTS),
                         "eval_soundfont": EVAL_SOUNDFONT, "opening_seconds": self.model_config.opening_seconds,
                         "windows": [c.min_windows, c.max_windows]},
                "train": {"lora": c.lora, "adapters": c.adapters, "descriptors": c.descriptors}}

    def report(self, model_dir: Path) -> tuple[dict, str]:
        """The test protocol (`evaluate.search`), with its baselines, as the card's numbers."""
        from safetensors.torch import load_file

        from pianoapp.models.checkpoint import load_config
        from pianoapp.services.library import TEXT_WEIGHT

        results = evaluate_search(model_dir, data_dir=self.data_dir, split="test")
        c, m = self.config, self.model_config
        counts = {split: len(self.features(split)) for split in ("train", "val", "test")}
        parts = [f"LoRA rank {m.lora_rank} on MiniLM's {'/'.join(LORA_TARGETS)}" if m.lora_rank else "MiniLM frozen (no LoRA)",
                 f"residual adapters {m.embed_dim}→{m.adapter_hidden}→{m.embed_dim}" if m.adapter_hidden else "no adapters",
                 f"piece descriptors (key, tempo, density, register, dynamics, texture of the whole piece's notes) through an MLP "
                 f"{PIECE_DIM}→{m.descriptor_hidden}→{m.embed_dim} into the MIDI tower" if m.descriptor_hidden else "no piece descriptors"]
        text = f"""Text–audio–MIDI search model: {'; '.join(parts)}; a linear projection of MiniLM's 384 dims to
{m.embed_dim}; the matcher's audio and MIDI towers frozen (models/matcher, `{load_config(model_dir)['matcher']}`). Trainable:
{sum(t.numel() for t in load_file(model_dir / "model.safetensors").values()):,} parameters (the LoRA weights, the projection, the adapters and the
temperature, and the descriptor MLP), the only weights in this folder; the parameter count above includes the frozen MiniLM.

## Data

Items of POP909, ASAP (performances) and Nottingham, piece-disjoint splits, plus music21 demo pieces in
the train split (items with features: train {counts['train']:,}, val {counts['val']:,}, test {counts['test']:,}).
Each item's first {m.opening_seconds:g} s rendered (training items alternate {' and '.join(TRAIN_SOUNDFONTS)};
val and test use {EVAL_SOUNDFONT}), cut into {SEGMENT_SECONDS:g} s windows every second and embedded once by the
frozen matcher; a training example is a run of {c.min_windows}–{c.max_windows} windows (the same seconds in both
modalities) and one caption from the "train" pool (`data.captions`); a batch holds distinct pieces.
Loss: mean of symmetric InfoNCE text↔audio, text↔MIDI, audio↔MIDI at a learned temperature.

## How the app uses it

An index holds each item's embedding from this model beside the MiniLM embedding of the item's text
(title, composer, collection, key, tempo and words from its notes: `services.library.item_text`), so a
query's score is (this model's cosine + {TEXT_WEIGHT:g} × the text's) / {1 + TEXT_WEIGHT:g}, plus a bonus for title
and composer words (`services.search`). The weight was chosen on the val split (`python bench/search_blend.py`).
The text half knows what the words of the note statistics say; the model knows what the music sounds
like; each finds pieces the other misses (rows "bind" and "item text + names" below). A caveat: the
item text and the evaluation's captions are both written from the same note statistics
(`data.attributes`), the text in training wordings and the captions in held-out ones, so part of the
text half's share is recall of a concept across paraphrases; people's own words would likely score lower.

## Evaluation (`{COMMAND}`, {results['split']} split, {results['items']} items of {results['pieces']} pieces)

{verdict(results)}

{search_markdown(results)}

## What was simplified

- The matcher's audio and MIDI towers stay frozen, with adapters on their window embeddings: fine-tuning
  them end to end (4 s windows through a 4.9M-parameter CNN/transformer per modality) was too slow for
  the CPU this ran on, so "fine-tuned vs frozen + adapters" was not compared. Baselines (the same
  recipe with `--set lora=false`, `adapters=false` or `descriptors=false`, trained into this folder's
  `no-lora`, `no-adapters` or `no-descriptors`) are scored beside it when trained with the same matcher.
- An item is its first {m.opening_seconds:g} s (the matcher's own render length), in training, in this
  evaluation and in the index; captions describe the whole piece (key, tempo, texture… from all its notes),
  which the piece descriptors carry: they are the same note statistics (`data.attributes`) the captions
  and the metadata baseline's line are written from, given to the model as numbers, not words.
- No early stopping: the trainer keeps the last step; validation (held-out captions of val items, pool
  {c.val_pool}) is logged every {c.eval_every} steps and the step budget was fixed from the time budget.
- Captions are generated (`data.captions`) from metadata and note statistics, not written by people.
"""
        return headline(results), text


def verdict(results: dict) -> str:
    """Sentences against issue 5's goal: median rank ≤ 3 at the pool, clearly above the metadata
    baseline on queries that name no title or composer; for the model alone and as the app ranks."""
    def cell(method: str, subset: str = "no_names") -> tuple[float, float]:
        m = results["methods"][method]["pool"][subset]
        return m["median_rank"]["mean"], m["R@10"]["mean"]

    (ours, ours_r10), (meta, meta_r10) = cell("bind"), cell("metadata")
    (app, app_r10), (meta_app, meta_app_r10) = cell("bind + text + names"), cell("metadata + names")
    (fallback, fallback_r10), (app_all, _) = cell("item text + names"), cell("bind + text + names", "all")
    met = app_all <= 3 and app < meta_app and app_r10 > meta_app_r10
    return (f"On queries naming no title or composer, at the pool of {results['pool']}: the model alone, median rank "
            f"{ours:.1f}, R@10 {ours_r10:.3f}, against the metadata baseline's {meta:.1f}, {meta_r10:.3f}. As the app "
            f"ranks (the model's cosine blended with the item text's, plus name words): {app:.1f}, {app_r10:.3f}, "
            f"against {meta_app:.1f}, {meta_app_r10:.3f} for the metadata baseline with name words and {fallback:.1f}, "
            f"{fallback_r10:.3f} for the app's own text-only engine; over all queries {app_all:.1f}. Issue 5's goal "
            f"(median rank ≤ 3, clearly above the metadata baseline) is {'met' if met else 'not met'} as the app ranks.")


def trimodal_loss(out: BindOutput) -> torch.Tensor:
    """Mean of the symmetric InfoNCE losses text↔audio, text↔MIDI and audio↔MIDI at the learned temperature."""
    temperature = 1 / out.logit_scale
    pairs = ((out.text, out.audio), (out.text, out.midi), (out.audio, out.midi))
    return sum(info_nce(a.float(), b.float(), temperature=temperature)["loss"] for a, b in pairs) / len(pairs)
