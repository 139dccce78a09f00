"""Text search: a description in, the indexed pieces nearest to it out, best first.

The engine (`library.ENGINE`) is "bind" where the trained text–audio–MIDI model is installed: the query
through its text tower, each item from how its opening sounds and what its notes do, compared by
cosine (models/bind/MODEL_CARD.md), blended with the MiniLM cosine between the query and the item's
description (`library.beside_text`: the model's counts 1, the description's `library.TEXT_WEIGHT`). Without it, "metadata": the query and each item's description
(title, composer, collection, key, tempo and words computed from its notes), both embedded with MiniLM.

Hybrid: candidates (the cosine shortlist, plus every item whose title or composer shares a word with
the query) are ranked by cosine + a bonus for the query's words found in the item's title or composer;
where the query names a composer, only that composer's pieces get the bonus.
Names need it: a sentence embedding blurs them ("piano music by Joplin" otherwise prefers Irving
Berlin's "Alexander's Ragtime Band"), and the bind engine embeds items from their music, which knows no
names at all. Weights measured by bench/search_quality.py:
- bind (with piece descriptors), 120 validation-split items (`--per-collection 40`): finding a piece by
  its title, recall@1 0.04 → 0.975; "<composer> <form>", precision@5 0.19 → 1.00; held-out captions,
  recall@10 0.675 → 0.758. 1.0: names and composers stop improving at 0.7, captions gain little more
  (0.775 at 1.5) while one shared word would outweigh the music further. Since the description's
  cosine joined the model's, a score is their blend divided by 1 + TEXT_WEIGHT, and so is the weight
  (1/3). Measured again with the blend: titles, recall@1 0.65 → 0.988 (from 0.1 on); "<composer> <form>",
  precision@5 0.61 → 1.00 (from 0.3 on); captions, recall@10 0.80 → 0.83 (0.84 at 0.5, 0.82 at 1.0).
- metadata, 455 items of every split (before "piano" and "music" became stopwords): titles, recall@1 0.67 → 0.85; "<composer> <form>", precision@5 0.71 → 0.97;
  captions about the same (recall@10 0.49 → 0.51). 0.3 is where all three stop improving.
"""

import functools
import os
import re

import numpy as np

from pianoapp.errors import BadInputError
from pianoapp.index import Filters, Index  # Filters: the UI and CLI build them through this module
from pianoapp.services import library

ENGINE_NOTES = {
    "bind": "Answering: **text–music search**: a model trained to put descriptions and music in one space "
            "compares your words with how each piece sounds and what its notes do (its opening, rendered and "
            "read by the audio and MIDI encoders, and the key, tempo and texture of all its notes), and, "
            "weighing more, with each piece's description (title, composer, key, tempo, texture); words of a "
            "title or composer in your query count extra.",
    "metadata": "Answering: **metadata search**: your words are compared (MiniLM sentence embeddings) with each "
                "piece's description: title, composer, collection, key, tempo, and words computed from its notes "
                "(tempo, mood, texture, register, dynamics).",
}
ENGINE_NOTE = ENGINE_NOTES[library.ENGINE]
EXAMPLE_QUERIES = (
    "a slow, sad piece in a minor key",
    "Bach chorale in four voices",
    "a lively ragtime for piano",
    "Irish dance tune, fast jig",
    "gentle song by Schubert",
    "string quartet movement by Haydn",
)
HIT_FIELDS = ("path", "title", "composer", "collection", "key", "tempo_bpm", "duration_s", "id")
WORD_BONUSES = {"bind": 1.0 / (1.0 + library.TEXT_WEIGHT), "metadata": 0.3}  # per engine: their cosines spread differently (see above)
WORD_BONUS = WORD_BONUSES[library.ENGINE]  # score = cosine + this × share of the query's words in the title or composer
SHORTLIST = 100  # cosine candidates per index that the word bonus re-ranks
# "piano" and "music" too: every item is piano music, so in a query they name nothing ("piano music by Joplin")
STOPWORDS = frozenset({"a", "an", "the", "in", "of", "by", "and", "with", "for", "to", "no", "op", "piano", "music"})


def search(text: str, *, index_dir: str | os.PathLike | None = None, k: int = 10,
           filters: Filters | None = None, with_user_index: bool = False) -> list[dict]:
    """Up to k hits, best first: dicts with path (as indexed), title, composer, collection, score
    (cosine plus the word bonus), key, tempo_bpm, duration_s and id. Without `index_dir`, the built-in demo index answers;
    `with_user_index` also searches the app's index of the user's own files, if there is one."""
    if k < 1:
        raise BadInputError(f"-k must be at least 1, not {k}.")
    indexes = library.open_indexes(index_dir, with_user_index)  # before the model loads, so that errors come fast
    query = library.embed_texts([text])[0]
    candidates = [hit for index in indexes for hit in _candidates(index, query, _words(text), k, filters)]
    overlaps = word_overlaps(text, [item for item, _ in candidates])  # every item naming a query word is a candidate
    hits = [(item, cosine + WORD_BONUS * overlap) for (item, cosine), overlap in zip(candidates, overlaps, strict=True)]
    hits.sort(key=lambda hit: -hit[1])
    return [{**{f: item.get(f) for f in HIT_FIELDS}, "score": round(score, 4)} for item, score in hits[:k]]


def _candidates(index: Index, query: np.ndarray, words: set[str], k: int,
                filters: Filters | None) -> list[tuple[dict, float]]:
    """(item, cosine) for the cosine shortlist and for the items naming one of the query's words,
    wherever their cosine ranks them: the bonus may lift those to the top."""
    found = index.search(query, max(k, SHORTLIST), filters)
    seen = {item["id"] for item, _ in found}
    named = sorted({row for word in words for row in _rows_by_name_word(index).get(word, ())})
    named = [row for row in named if index.items[row]["id"] not in seen
             and (filters is None or filters.keep(index.items[row]))]
    cosines = index.embeddings[named] @ (query / max(float(np.linalg.norm(query)), 1e-12))
    return found + [(index.items[row], float(c)) for row, c in zip(named, cosines, strict=True)]


@functools.lru_cache(maxsize=8)  # per opened index generation (`library.open_index` makes a new one per save)
def _rows_by_name_word(index: Index) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for row, item in enumerate(index.items):
        for word in _words(f"{item['title']} {item['composer']}"):
            rows.setdefault(word, []).append(row)
    return rows


def warm_up() -> None:
    """Load the demo index and the text encoder, so the first query answers at full speed."""
    library.open_indexes(None, False)
    library.embed_texts(["warm up"])


def word_overlaps(text: str, items: list[dict]) -> list[float]:
    """Per item, the share of the query's words (stopwords aside) that are words of its title or
    composer; but where the query names composers of these items, 0 for the items by none of them:
    "string quartet movement by Haydn" must not lift Beethoven's "String Quartet" movements."""
    query = _words(text)
    composers = [_words(item["composer"]) for item in items]
    named = query & set().union(*composers)
    return [0.0 if not query or (named and not named & composer)
            else len(query & (_words(item["title"]) | composer)) / len(query)
            for item, composer in zip(items, composers, strict=True)]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 1 and w not in STOPWORDS}


def browse(*, filters: Filters | None = None, with_user_index: bool = False) -> list[dict]:
    """Every item of the demo index (and the user's), in title order: the table before any query."""
    items = [it for index in library.open_indexes(None, with_user_index) for it in index.items
             if filters is None or filters.keep(it)]
    return [{f: it.get(f) for f in HIT_FIELDS} for it in sorted(items, key=lambda it: it["title"].lower())]


def facets(*, with_user_index: bool = False) -> dict[str, list[str]]:
    """The collections and composers there are to filter by, sorted."""
    items = [it for index in library.open_indexes(None, with_user_index) for it in index.items]
    return {name: sorted({it[name] for it in items if it.get(name)}, key=str.lower)
            for name in ("collection", "composer")}


