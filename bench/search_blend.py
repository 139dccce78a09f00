"""How much the description's cosine should weigh beside the bind model's (`library.TEXT_WEIGHT`).

    python bench/search_blend.py [--split val] [--weights 0 0.5 1 1.5 2 3]

For each weight w, the `pianoapp eval search` protocol (held-out captions, pool 199, 5 seeds) ranks by
bind cosine + w × MiniLM cosine between the query and the item's text (`library.item_text`), plus the
title/composer word bonus at 1.0 on that scale, as the app does. Prints mean R@10, MRR and median rank
over the queries that name no title or composer, and over all. Choose on val; report on test.
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from pianoapp.constants import MODELS_DIR
from pianoapp.data.captions import captions
from pianoapp.data.segments import COLLECTIONS
from pianoapp.evaluate.search import POOL, SEEDS, item_embeddings, names_item, pool_ranks, rank_metrics
from pianoapp.models.checkpoint import load_model
from pianoapp.models.text_encoder import load_text_encoder
from pianoapp.services.library import item_text
from pianoapp.services.search import word_overlaps
from pianoapp.train.bind import bind_items, item_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    args = parser.parse_args()
    model, encoder = load_model(MODELS_DIR / "bind", device="cpu"), load_text_encoder()
    items = [i for i in bind_items(args.split) if i.collection in COLLECTIONS]
    features = item_features(items, split=args.split, seconds=model.config.opening_seconds)
    pieces = [f.item.piece_id for f in features]
    texts = encoder.encode([item_text(f.item, f.attributes) for f in features])
    vectors = item_embeddings(model, features)
    hits = [{"title": f.item.title, "composer": f.item.composer} for f in features]
    metrics = {w: {"no_names": [], "all": []} for w in args.weights}
    for seed in range(SEEDS):
        queries = [captions(f.item, f.attributes, n=1, seed=seed, split="eval")[0] for f in features]
        named = np.array([names_item(q, f.item) for q, f in zip(queries, features, strict=True)])
        overlap = np.array([word_overlaps(q, hits) for q in queries])
        bind, text = model.encode_texts(queries) @ vectors.T, encoder.encode(queries) @ texts.T
        for w in args.weights:
            ranks = pool_ranks(bind + w * text + overlap, pieces, pool=POOL, seed=seed)
            metrics[w]["no_names"].append(rank_metrics(ranks[~named]))
            metrics[w]["all"].append(rank_metrics(ranks))
    print(f"{args.split} split, {len(features)} items, pool {POOL}, {SEEDS} seeds")
    print("| weight | R@10 not naming | MRR not naming | median not naming | R@10 all | MRR all | median all |")
    print("|---|---|---|---|---|---|---|")
    for w, by in metrics.items():
        cells = [np.mean([m[k] for m in by[subset]]) for subset in ("no_names", "all") for k in ("R@10", "MRR", "median_rank")]
        print(f"| {w:g} | " + " | ".join(f"{c:.3f}" if i % 3 != 2 else f"{c:.1f}" for i, c in enumerate(cells)) + " |")


if __name__ == "__main__":
    main()
