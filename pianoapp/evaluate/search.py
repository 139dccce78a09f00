"""Text search, evaluated (`pianoapp eval search`): held-out captions find their items on the test split.

Queries: one caption per test item (POP909, ASAP performances, Nottingham; piece-disjoint from
training), drawn from the "eval" pool of templates and wordings that training never saw, so the
numbers measure paraphrase, not template recall. Each query is ranked against a pool of 199 items
(its own and 198 items of other pieces, PianoBind's setting) and against the whole split; items of
the query's own piece (other performances) are left out of both, since a caption cannot tell them
apart. Ties count against the query. Seeds change the captions and the pools; mean ± std over seeds.

Queries are also split by whether they name the item's title or composer: names are what the
metadata baseline can match, the rest is what only the music can answer.

Methods, all in one run: random order; MiniLM cosine between the query and each item's plain
metadata line (`data.captions.describe`: title, composer, collection, key, tempo); the bind model
and its baselines without LoRA / adapters / piece descriptors where they were trained; "bind + text", the
app's bind engine: the model's cosine blended with MiniLM's between the query and the item's text
(`services.library.beside_text` and `item_text`, what the index holds); "item text + names", the
metadata engine as the app runs it without models/bind. "+ names" rows add the search
service's title/composer word bonus (`services.search.word_overlaps`) at each engine's weight; "bind +
text + names" is what the app ranks by.
"""

import os
from pathlib import Path

import numpy as np
import torch

from pianoapp.data.captions import captions, describe
from pianoapp.descriptors import piece_descriptors
from pianoapp.errors import BadInputError

KS = (1, 5, 10)
POOL = 199
SEEDS = 5
COMMAND = "pianoapp eval search --json"
BASELINES = {"no-lora": "bind without LoRA", "no-adapters": "bind without adapters",
             "no-descriptors": "bind without descriptors"}  # subfolders of the model's
SUBSETS = ("all", "names", "no_names")


def pool_ranks(scores: np.ndarray, pieces: list[str], *, pool: int | None, seed: int) -> np.ndarray:
    """0-based rank of item q for query q (scores: (queries, items), query q belongs to item q), among
    `pool - 1` items of other pieces drawn with `seed`, or all of them when pool is None."""
    rng = np.random.default_rng(seed)
    pieces_arr = np.asarray(pieces)
    ranks = np.zeros(len(scores), np.int64)
    for q in range(len(scores)):
        others = np.flatnonzero(pieces_arr != pieces_arr[q])
        if pool is not None and len(others) > pool - 1:
            others = rng.choice(others, pool - 1, replace=False)
        ranks[q] = np.sum(scores[q, others] >= scores[q, q])
    return ranks


def rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {**{f"R@{k}": float(np.mean(ranks < k)) for k in KS}, "MRR": float(np.mean(1 / (ranks + 1))),
            "median_rank": float(np.median(ranks + 1))}


@torch.inference_mode()
def item_embeddings(model: torch.nn.Module, features: list, *, batch_size: int = 64) -> np.ndarray:
    """Search embeddings (n, embed_dim) of items (`train.bind.ItemFeatures`): every cached window."""
    out = []
    for first in range(0, len(features), batch_size):
        chunk = features[first:first + batch_size]
        towers = []
        for name in ("audio", "midi"):
            arrays = [getattr(f, name) for f in chunk]
            width = max(len(a) for a in arrays)
            padded = torch.zeros(len(chunk), width, arrays[0].shape[1])
            mask = torch.zeros(len(chunk), width, dtype=torch.bool)
            for k, a in enumerate(arrays):
                padded[k, : len(a)], mask[k, : len(a)] = torch.from_numpy(a.astype(np.float32)), True
            towers.append((padded, mask))
        (audio, audio_mask), (midi, midi_mask) = towers
        descriptors = torch.from_numpy(np.stack([piece_descriptors(f.attributes) for f in chunk]))
        out.append(model.fuse(model.embed_audio(audio, audio_mask),
                              model.embed_midi(midi, midi_mask, descriptors)).float().numpy())
    return np.concatenate(out)


def names_item(query: str, item) -> bool:
    """Whether a caption names its item's title or composer."""
    text = query.lower()
    return any(name and name.lower() in text for name in (item.title, item.composer))


def evaluate_search(model_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                    split: str = "test", seed: int = 0, seeds: int = SEEDS, pool: int = POOL) -> dict:
    """The protocol above for the bind model in model_dir (baselines from its `BASELINES` subfolders
    trained with the same matcher, when present); a JSON-ready dict."""
    from pianoapp.data.segments import COLLECTIONS
    from pianoapp.models.bind import matcher_id
    from pianoapp.models.checkpoint import load_config, load_model
    from pianoapp.models.text_encoder import load_text_encoder
    from pianoapp.services.library import TEXT_WEIGHT, beside_text, item_text
    from pianoapp.services.search import WORD_BONUSES, word_overlaps
    from pianoapp.train.bind import bind_items, item_features

    model_dir = Path(model_dir)
    trained_with = load_config(model_dir).get("matcher")
    if trained_with != matcher_id():
        raise BadInputError(f"The bind model in {model_dir} was trained with matcher {trained_with}, but "
                            f"models/matcher is {matcher_id()}; retrain it with `pianoapp train bind`.")
    models = {"bind": load_model(model_dir, device="cpu")}
    for folder, name in BASELINES.items():
        baseline = model_dir / folder
        # One trained on another matcher's windows would be scored on windows it never saw.
        if (baseline / "model.safetensors").is_file() and load_config(baseline).get("matcher") == trained_with:
            models[name] = load_model(baseline, device="cpu")
    items = [item for item in bind_items(split, data_dir=Path(data_dir) if data_dir else None)
             if item.collection in COLLECTIONS]
    features = item_features(items, split=split, seconds=models["bind"].config.opening_seconds)
    if len(features) < 2:
        raise BadInputError(f"The {split} split has {len(features)} usable items; evaluation needs at least two.")
    pieces = [f.item.piece_id for f in features]
    encoder = load_text_encoder()
    metadata = encoder.encode([describe(f.item, f.attributes) for f in features])
    vectors = {name: item_embeddings(model, features) for name, model in models.items()}
    texts = [item_text(f.item, f.attributes) for f in features]
    blended, text_vectors = beside_text(vectors["bind"], texts), encoder.encode(texts)
    hits = [{"title": f.item.title, "composer": f.item.composer} for f in features]

    runs: dict[str, dict[str, dict[str, list]]] = {}  # method -> "pool"/"whole" -> subset -> per-seed metrics
    counts = {subset: [] for subset in SUBSETS}
    for s in range(seed, seed + seeds):
        queries = [captions(f.item, f.attributes, n=1, seed=s, split="eval")[0] for f in features]
        named = np.array([names_item(q, f.item) for q, f in zip(queries, features, strict=True)])
        overlap = np.array([word_overlaps(q, hits) for q in queries])
        cosine = encoder.encode(queries) @ metadata.T
        scores = {"random": np.random.default_rng(s).random((len(queries), len(features))),
                  "metadata": cosine, "metadata + names": cosine + WORD_BONUSES["metadata"] * overlap}
        for name, model in models.items():
            scores[name] = model.encode_texts(queries) @ vectors[name].T
        scores["bind + names"] = scores["bind"] + WORD_BONUSES["bind"] * (1 + TEXT_WEIGHT) * overlap  # cosine scale
        scores["bind + text"] = beside_text(models["bind"].encode_texts(queries), queries) @ blended.T
        scores["bind + text + names"] = scores["bind + text"] + WORD_BONUSES["bind"] * overlap
        scores["item text + names"] = encoder.encode(queries) @ text_vectors.T + WORD_BONUSES["metadata"] * overlap
        subsets = {"all": np.ones(len(queries), bool), "names": named, "no_names": ~named}
        for subset, rows in subsets.items():
            counts[subset].append(int(rows.sum()))
        for method, score in scores.items():
            for where, size in (("pool", pool), ("whole", None)):
                ranks = pool_ranks(score, pieces, pool=size, seed=s)
                for subset, rows in subsets.items():
                    if rows.any():
                        runs.setdefault(method, {}).setdefault(where, {}).setdefault(subset, []).append(
                            rank_metrics(ranks[rows]))
    methods = {method: {where: {subset: _mean_std(per_seed) for subset, per_seed in by_subset.items()}
                        for where, by_subset in by_where.items()} for method, by_where in runs.items()}
    return {"split": split, "items": len(features), "pieces": len(set(pieces)), "pool": min(pool, len(features)),
            "seeds": list(range(seed, seed + seeds)), "queries": {k: float(np.mean(v)) for k, v in counts.items()},
            "word_bonus": WORD_BONUSES, "text_weight": TEXT_WEIGHT, "model": str(model_dir), "methods": methods, "command": COMMAND}


def _mean_std(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(np.mean([m[k] for m in per_seed])), "std": float(np.std([m[k] for m in per_seed]))}
            for k in per_seed[0]}


def headline(results: dict) -> dict[str, float]:
    """The card's metric lines: the bind model and the metadata baseline at the pool."""
    out = {}
    for method, tag in (("bind + text + names", "app"), ("bind", "bind"), ("bind + names", "bind_names"),
                        ("metadata", "metadata")):
        for subset in ("all", "no_names"):
            m = results["methods"][method]["pool"][subset]
            suffix = "" if subset == "all" else "_no_names"
            out[f"test_{tag}_R@10{suffix}"] = m["R@10"]["mean"]
            out[f"test_{tag}_median_rank{suffix}"] = m["median_rank"]["mean"]
    return out


def markdown(results: dict) -> str:
    """Tables of `evaluate_search`'s results, for the model card."""
    q = results["queries"]

    def cell(m: dict, key: str) -> str:
        v = m[key]
        return f"{v['mean']:.1f} ± {v['std']:.1f}" if key == "median_rank" else f"{v['mean']:.3f} ± {v['std']:.3f}"

    lines = []
    for where, title in (("pool", f"pool of {results['pool']}"), ("whole", f"whole {results['split']} split")):
        lines += [f"**{title}** (all {q['all']:.0f} queries)", "",
                  "| method | R@1 | R@5 | R@10 | MRR | median rank | R@10 naming | median naming | R@10 not naming | median not naming |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method, by_where in results["methods"].items():
            m = by_where[where]
            cells = [cell(m["all"], k) for k in ("R@1", "R@5", "R@10", "MRR", "median_rank")]
            for subset in ("names", "no_names"):
                cells += [cell(m[subset], "R@10"), cell(m[subset], "median_rank")] if subset in m else ["–", "–"]
            lines.append(f"| {method} | {' | '.join(cells)} |")
        lines.append("")
    lines.append(f"Queries naming the title or composer: {q['names']:.0f} on average, not naming: {q['no_names']:.0f}; "
                 f"mean ± std over seeds {results['seeds'][0]}–{results['seeds'][-1]}. "
                 f"\"+ names\": + the search service's weight (metadata {results['word_bonus']['metadata']}, bind "
                 f"+ text {results['word_bonus']['bind']:.3f}, bind alone 1.0) × the share of the query's words in the "
                 f"title or composer. \"bind + text\": (bind cosine + {results['text_weight']:g} × MiniLM cosine with "
                 f"the item's text) / {1 + results['text_weight']:g}, as the app's index holds it.")
    return "\n".join(lines)
