"""Text-search latency over 10,000 synthetic items: exact vs approximate FAISS, with a NumPy baseline.

Items are made-up catalogue lines (title, composer, collection, key, tempo and the words the
metadata engine adds) embedded with MiniLM, so the vectors cluster as real ones do; queries are
descriptions in other words. Prints p50/p95 per query of search alone, of query embedding alone, of
both together, and of the whole service call (`pianoapp.services.search.search` over a saved index),
plus the approximate index's recall@10 against the exact one. Goal: p95 ≤ 50 ms with the embedding.

    python bench/search_latency.py [--items 10000] [--queries 200] [--seed 0]
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from pianoapp.index import Index
from pianoapp.models import text_encoder
from pianoapp.services import library
from pianoapp.services.search import search

COMPOSERS = ["Bach", "Mozart", "Chopin", "Joplin", "Schubert", "Haydn", "Beethoven", "Liszt", "", ""]
FORMS = ["waltz", "jig", "reel", "chorale", "sonata", "étude", "nocturne", "rag", "song", "hornpipe", "prelude"]
MOODS = ["cheerful", "warm", "calm", "agitated", "wistful", "sad"]
TEXTURES = ["single-line melody", "block chords", "layered lines"]
REGISTERS = ["low register", "middle register", "high register"]
KEYS = [f"{t} {m}" for t in ("C", "D", "E", "F", "G", "A", "Bb") for m in ("major", "minor")]
QUERY_WORDS = ["a gentle", "a fast", "a sad", "a lively", "a slow", "an angry", "a dreamy"]


def item_texts(n: int, rng: random.Random) -> list[str]:
    texts = []
    for i in range(n):
        form, composer = rng.choice(FORMS), rng.choice(COMPOSERS)
        bpm = rng.randint(50, 180)
        texts.append("; ".join(part for part in (
            f"{form.title()} {i}", composer, rng.choice(["my collection", "Nottingham folk tunes", "ASAP classical piano"]),
            rng.choice(KEYS), f"{bpm} BPM", form, rng.choice(MOODS), "fast" if bpm > 120 else "slow",
            rng.choice(TEXTURES), rng.choice(REGISTERS)) if part))
    return texts


def query_texts(n: int, rng: random.Random) -> list[str]:
    return [f"{rng.choice(QUERY_WORDS)} {rng.choice(FORMS)} {rng.choice(['by ' + c for c in COMPOSERS if c] + ['in a minor key', 'for dancing'])}"
            for _ in range(n)]


def percentiles(seconds: list[float]) -> str:
    p50, p95 = np.percentile(np.array(seconds) * 1000, [50, 95])
    return f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms"


def timed(fn, args_list) -> tuple[list[float], list]:
    times, outs = [], []
    for args in args_list:
        start = time.perf_counter()
        outs.append(fn(*args))
        times.append(time.perf_counter() - start)
    return times, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    start = time.perf_counter()
    vectors = library.embed_texts(item_texts(args.items, rng))
    print(f"embedded {args.items:,} item texts in {time.perf_counter() - start:.1f} s")
    queries = query_texts(args.queries, rng)
    library.embed_texts(queries[:8])  # warm up
    embed_times, query_vecs = timed(lambda q: library.embed_texts([q])[0], [(q,) for q in queries])
    few, text_encoder.FEW_TEXTS = text_encoder.FEW_TEXTS, 0  # as before: torch's default threads
    embed_default_threads, _ = timed(lambda q: library.embed_texts([q])[0], [(q,) for q in queries])
    text_encoder.FEW_TEXTS = few

    items = [{"id": f"i{i}", "path": f"synthetic/{i}.mid", "title": f"item {i}", "collection": "synthetic",
              "composer": "", "key": "", "duration_s": 0.0} for i in range(args.items)]
    exact = Index.create("unused", library.SPACE, vectors.shape[1], approximate=False)
    exact.add(items, vectors)
    approx = Index.create("unused", library.SPACE, vectors.shape[1], approximate=True)
    approx.add(items, vectors)
    start = time.perf_counter()
    approx.search(query_vecs[0], 10)  # builds the HNSW graph
    print(f"HNSW graph built in {time.perf_counter() - start:.1f} s\n")

    def numpy_search(q):
        scores = exact.embeddings @ q
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    def faiss_default_threads(q):
        return exact._searcher().search(q.reshape(1, -1), 10)  # FAISS's own OpenMP threads

    print(f"query embedding alone (MiniLM, 1 query, 1 thread): {percentiles(embed_times)}")
    print(f"query embedding, torch's default {faiss.omp_get_max_threads()} threads: {percentiles(embed_default_threads)}")
    rows = {
        "NumPy brute force (baseline)": numpy_search,
        "FAISS flat, default threads": faiss_default_threads,
        "FAISS IndexFlatIP (exact)": lambda q: exact.search(q, 10),
        "FAISS HNSW (approximate)": lambda q: approx.search(q, 10),
    }
    results = {}
    for name, fn in rows.items():
        times, outs = timed(fn, [(q,) for q in query_vecs])
        results[name] = outs
        with_embedding = [t + e for t, e in zip(times, embed_times, strict=True)]
        print(f"{name:30s} search {percentiles(times)} | with embedding {percentiles(with_embedding)}")
    truth = [{it["id"] for it, _ in hits} for hits in results["FAISS IndexFlatIP (exact)"]]
    found = [{it["id"] for it, _ in hits} for hits in results["FAISS HNSW (approximate)"]]
    recall = np.mean([len(t & f) / len(t) for t, f in zip(truth, found, strict=True)])
    print(f"HNSW recall@10 against exact: {recall:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "idx"
        exact.folder = folder
        exact.save()
        search(queries[0], index_dir=folder)  # opens and caches the index
        times, _ = timed(lambda q: search(q, index_dir=folder, k=10), [(q,) for q in queries])
        print(f"\nservice search() over a saved {args.items:,}-item index, embedding included: {percentiles(times)}")


if __name__ == "__main__":
    main()
