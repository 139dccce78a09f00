"""Does boosting exact title/composer word matches help the search engine? Measured, not guessed.

Runs with the installed engine (`library.ENGINE`). Items are validation-split pieces only, so the
bind model, trained on the train split, is measured on pieces it never saw: the demo index's music21
items of that split plus a fresh index of up to N files per training collection (POP909 songs, ASAP
scores, Nottingham tunes) from ../shared/data. Three kinds of query:
  caption    a held-out ("eval" pool) caption of one item, so wordings differ from the item text;
             the item itself is the answer (recall@1, recall@10, MRR)
  name       the item's title alone (non-Nottingham items): the item is the answer
  composer   "<composer> <form>", e.g. "Chopin nocturne": every item by that composer of that form
             is relevant (precision@5)
Each is scored by cosine alone (w=0, the baseline) and by cosine + w × `search.word_overlaps` (the
share of the query's words found in the item's title and composer) for a few w, exact over every item.

    python bench/search_quality.py [--per-collection 60] [--seed 0] [--data DIR] [--split val]
"""

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np

from pianoapp.data.captions import captions
from pianoapp.data.corpora import load_collection
from pianoapp.data.splits import split_of
from pianoapp.index import Index
from pianoapp.services import library
from pianoapp.services.search import word_overlaps

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)  # the service uses search.WORD_BONUS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-collection", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--split", default="val", help="pieces of this split only (tune on val, never on test)")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    known = {}  # index path -> corpus Item
    paths = []
    for name in ("pop909", "asap", "nottingham"):
        items = [it for it in load_collection(name, args.data)
                 if it.meta.get("kind") != "performance" and split_of(it.piece_id) == args.split]
        for item in rng.sample(items, min(args.per_collection, len(items))):
            paths.append(str(item.path))
            known[str(item.path)] = item
    demo = library.open_index(library.DEMO_INDEX_DIR)
    root = library.locate(library.MUSIC21_PREFIX)
    for item in load_collection("music21"):
        known[library.MUSIC21_PREFIX + item.path.relative_to(root).as_posix()] = item
    with tempfile.TemporaryDirectory() as tmp:
        library.build_index(paths, Path(tmp) / "idx")
        extra = Index.open(Path(tmp) / "idx")
    in_split = [i for i, it in enumerate(demo.items) if split_of(known[it["path"]].piece_id) == args.split]
    items = [demo.items[i] for i in in_split] + extra.items
    vectors = np.concatenate([demo.embeddings[in_split], extra.embeddings])
    print(f"engine {library.ENGINE}, {args.split} split: {len(items)} items: {len(in_split)} music21, "
          f"{len(extra)} from the training collections")

    queries = {"caption": [], "name": [], "composer": []}
    for i, it in enumerate(items):
        item = known[it["path"]]
        queries["caption"].append((captions(item, it["attributes"], n=1, seed=args.seed, split="eval")[0], {i}))
        if item.collection != "nottingham":
            queries["name"].append((it["title"], {i}))
    groups = {}
    for i, it in enumerate(items):
        form = known[it["path"]].meta.get("form")
        if it["composer"] and form:
            groups.setdefault(f"{it['composer']} {form}", set()).add(i)
    queries["composer"] = sorted(groups.items())

    for kind, pairs in queries.items():
        texts = [q for q, _ in pairs]
        qvecs = library.embed_texts(texts)
        cosine = qvecs @ vectors.T
        overlap = np.array([word_overlaps(q, items) for q in texts])
        for w in WEIGHTS:
            scores = cosine + w * overlap
            order = np.argsort(-scores, axis=1)
            if kind == "composer":
                p5 = np.mean([len(set(order[r, :5]) & rel) / min(5, len(rel)) for r, (_, rel) in enumerate(pairs)])
                print(f"{kind:9s} ({len(pairs):3d} queries) w={w:<4} precision@5 {p5:.3f}")
            else:
                ranks = np.array([np.flatnonzero(np.isin(order[r], list(rel)))[0] for r, (_, rel) in enumerate(pairs)])
                print(f"{kind:9s} ({len(pairs):3d} queries) w={w:<4} R@1 {np.mean(ranks < 1):.3f}  "
                      f"R@10 {np.mean(ranks < 10):.3f}  MRR {np.mean(1 / (ranks + 1)):.3f}")


if __name__ == "__main__":
    main()
