"""A persistent vector index: unit embeddings and one metadata record per item, in one folder.

    manifest.json        format version, embedding space and width, and which generation is current
    items-<g>.jsonl      one JSON object per item, in embedding order
    embeddings-<g>.npy   float32 (items, dim), L2-normalised, so inner product = cosine; Explore
                         and re-ranking read them without embedding anything again
    ann-<g>.faiss        the approximate (HNSW) graph, only for indexes searched approximately
    windows-<g>.npz      optional: each item's content over time (`Windows`): overlapping windows
                         embedded by the audio↔MIDI matcher (int8 on disk), and chroma frames, for matching

A save writes generation g+1 beside g and then replaces manifest.json, the one commit point: a crash
at any moment leaves a manifest naming a complete generation, the old one or the new one.

Search is exact (FAISS `IndexFlatIP`) up to EXACT_MAX_ITEMS items: at 100k × 384 it still answers in
tens of milliseconds on two cores. Beyond that an HNSW graph trades a little recall for speed
(bench/search_latency.py measures both on the same items).

An item is a dict with at least `id` (its content hash: adding the same content twice keeps one) and
`path` (as the caller gave it). Filters read `collection`, `composer`, `key` and `duration_s`.
"""

import contextlib
import fcntl
import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from pianoapp.errors import BadInputError, CorruptFileError, brief
from pianoapp.io.files import write_atomic

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EXACT_MAX_ITEMS = 100_000
HNSW_NEIGHBOURS = 32  # graph degree: recall@10 ≥ 0.95 at efSearch 64 on 384-d text embeddings
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
WINDOW_ARRAYS = ("embeddings", "owner", "start_s", "chroma", "chroma_owner", "cohort")  # the fields `Windows` saves


@dataclass(frozen=True)
class ItemTimeline:
    """What matching keeps of one item: its 4 s windows embedded by the matcher, and chroma frames."""

    embeddings: np.ndarray  # (n, dim)
    start_s: np.ndarray  # (n,) where each window starts
    chroma: np.ndarray  # (frames, 12), each frame unit-norm or zero
    cohort: tuple[float, float]  # mean and std of its best window's similarity to unrelated queries


@dataclass
class Windows:
    """Every item's content over time, for matching: embedded windows (and each item's cohort
    statistics) to shortlist the pieces a recording may come from, chroma frames to align it with each. Rows are grouped by item, in
    item order, so one item's rows are contiguous and in time order."""

    space: str  # the matcher checkpoint the embeddings come from
    embeddings: np.ndarray  # (W, dim) float16, L2-normalised
    owner: np.ndarray  # (W,) int32: the row of the item each window belongs to
    start_s: np.ndarray  # (W,) float32: where each window starts in its item
    chroma: np.ndarray  # (F, 12) uint8: chroma frames scaled to 0–255
    chroma_owner: np.ndarray  # (F,) int32
    cohort: np.ndarray  # (items, 2) float32: `ItemTimeline.cohort` per item

    @classmethod
    def empty(cls, space: str, dim: int) -> "Windows":
        return cls(space, np.zeros((0, dim), np.float16), np.zeros(0, np.int32), np.zeros(0, np.float32),
                   np.zeros((0, 12), np.uint8), np.zeros(0, np.int32), np.zeros((0, 2), np.float32))

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.owner)

    def rows_of(self, item_row: int) -> slice:
        """The window rows of one item."""
        return _rows(self.owner, item_row)

    def chroma_of(self, item_row: int) -> np.ndarray:
        """One item's chroma, (12, frames) float32."""
        return self.chroma[_rows(self.chroma_owner, item_row)].T.astype(np.float32) / 255

    def best_similarities(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(Q, len(items)): each query row's cosine similarity to the closest window of each item,
        to about 1e-3. One matrix product over the windows of the items asked for, in float16 as
        stored: at a million windows the product is bound by memory, and torch's half-precision
        product reads half of what a float32 copy would (0.14 s against NumPy's 0.37 s on one core)."""
        import torch

        queries = np.asarray(queries, np.float32)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        items = np.asarray(items, self.owner.dtype)  # owner's dtype: searchsorted would copy owner otherwise
        if not len(items):
            return np.zeros((len(queries), 0), np.float32)
        lo, hi = self.owner.searchsorted(items), self.owner.searchsorted(items + 1)
        if lo[0] == 0 and hi[-1] == len(self.owner) and np.array_equal(lo[1:], hi[:-1]):
            windows, firsts = self.embeddings, lo  # every window, in order: no gather
        else:
            windows = self.embeddings[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])]
            firsts = np.cumsum(np.concatenate([[0], (hi - lo)[:-1]]))
        with torch.inference_mode():
            fits = torch.from_numpy(windows) @ torch.from_numpy(queries.astype(np.float16)).T
        return np.maximum.reduceat(fits.float().numpy(), firsts, axis=0).T

    def extend(self, first_row: int, timelines: list[ItemTimeline]) -> "Windows":
        """These windows plus those of new items at rows first_row, first_row + 1, …"""
        embeddings, owner, start_s = [self.embeddings], [self.owner], [self.start_s]
        chroma, chroma_owner, cohort = [self.chroma], [self.chroma_owner], [self.cohort]
        for i, item in enumerate(timelines):
            emb = np.asarray(item.embeddings, np.float32).reshape(-1, self.dim)
            embeddings.append((emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float16))
            owner.append(np.full(len(emb), first_row + i, np.int32))
            start_s.append(np.asarray(item.start_s, np.float32))
            chroma.append(np.round(np.clip(item.chroma, 0, 1) * 255).astype(np.uint8).reshape(-1, 12))
            chroma_owner.append(np.full(len(chroma[-1]), first_row + i, np.int32))
            cohort.append(np.array([item.cohort], np.float32))
        return Windows(self.space, *map(np.concatenate, (embeddings, owner, start_s, chroma, chroma_owner, cohort)))

    def without(self, gone_rows: np.ndarray) -> "Windows":
        """These windows less those of the items at gone_rows, owners renumbered to the kept items."""
        gone_rows = np.sort(gone_rows)

        def kept(owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            keep = ~np.isin(owner, gone_rows)
            shift = np.searchsorted(gone_rows, owner[keep])  # items removed before each owner
            return keep, (owner[keep] - shift).astype(np.int32)

        (keep, owner), (keep_f, chroma_owner) = kept(self.owner), kept(self.chroma_owner)
        return Windows(self.space, self.embeddings[keep], owner, self.start_s[keep], self.chroma[keep_f], chroma_owner,
                       np.delete(self.cohort, gone_rows, axis=0))


def _rows(owner: np.ndarray, item_row: int) -> slice:
    lo, hi = owner.searchsorted(np.array([item_row, item_row + 1], owner.dtype))  # owner's dtype: no copy of owner
    return slice(int(lo), int(hi))


@dataclass(frozen=True)
class Filters:
    """Keep only items matching every field given. Text fields ignore case; `key` may be a whole key
    ("D minor") or only a mode ("minor")."""

    collection: str | None = None
    composer: str | None = None
    key: str | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None

    def keep(self, item: dict) -> bool:
        key = (item.get("key") or "").lower()
        duration = item.get("duration_s") or 0.0
        return (
            (not self.collection or (item.get("collection") or "").lower() == self.collection.lower())
            and (not self.composer or (item.get("composer") or "").lower() == self.composer.lower())
            and (not self.key or key == self.key.lower() or key.endswith(" " + self.key.lower()))
            and (self.min_seconds is None or duration >= self.min_seconds)
            and (self.max_seconds is None or duration <= self.max_seconds)
        )


class Index:
    def __init__(self, folder: str | os.PathLike, space: str, dim: int, items: list[dict],
                 embeddings: np.ndarray, *, generation: int = 0, approximate: bool | None = None,
                 windows: Windows | None = None):
        self.folder = Path(folder)
        self.space = space  # names the encoder (and text recipe) the embeddings come from
        self.dim = dim
        self.items = items
        self.embeddings = embeddings
        self.generation = generation
        self.windows = windows
        self._approximate = approximate  # None: decided by size
        self._faiss = None  # built on first search, dropped on any change

    @classmethod
    def create(cls, folder: str | os.PathLike, space: str, dim: int, *,
               approximate: bool | None = None, windows: Windows | None = None) -> "Index":
        """An empty index for `folder` (written by `save`); with `windows` (empty), one that keeps
        every item's time windows too."""
        return cls(folder, space, dim, [], np.zeros((0, dim), np.float32), approximate=approximate,
                   windows=windows)

    @classmethod
    def open(cls, folder: str | os.PathLike, *, space: str | None = None,
             approximate: bool | None = None) -> "Index":
        """Read an index; with `space`, refuse one whose embeddings come from another encoder."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        if space is not None and manifest["space"] != space:
            raise BadInputError(
                f"The index at {folder} holds '{manifest['space']}' embeddings but search now uses "
                f"'{space}'; rebuild it with `pianoapp index build PATH... --out {folder}`."
            )
        gen = manifest["generation"]
        try:
            embeddings = np.load(folder / manifest["embeddings"], allow_pickle=False)
            with open(folder / manifest["items"], encoding="utf-8") as f:
                items = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as err:
            raise CorruptFileError(f"The index at {folder} is damaged ({brief(err)}); rebuild it.") from err
        if embeddings.shape != (len(items), manifest["dim"]):
            raise CorruptFileError(
                f"The index at {folder} is damaged ({len(items)} items but embeddings of shape "
                f"{embeddings.shape}); rebuild it."
            )
        windows = _read_windows(folder, manifest, len(items)) if manifest.get("windows") else None
        index = cls(folder, manifest["space"], manifest["dim"], items, embeddings.astype(np.float32),
                    generation=gen, approximate=approximate, windows=windows)
        if manifest.get("ann") and index.approximate:
            graph = faiss.read_index(str(folder / manifest["ann"]))
            if graph.ntotal == len(items):
                graph.hnsw.efSearch = HNSW_EF_SEARCH
                index._faiss = graph
        return index

    def __len__(self) -> int:
        return len(self.items)

    def reembed(self, space: str, embeddings: np.ndarray) -> None:
        """Every item's embedding replaced (same rows, another space); written by the next `save`."""
        if len(embeddings) != len(self.items):
            raise ValueError(f"{len(embeddings)} embeddings for {len(self.items)} items")
        self.space, self.dim = space, embeddings.shape[1]
        self.embeddings, self._faiss = np.asarray(embeddings, np.float32), None

    @property
    def approximate(self) -> bool:
        return len(self) > EXACT_MAX_ITEMS if self._approximate is None else self._approximate

    def add(self, items: list[dict], embeddings: np.ndarray,
            windows: list[ItemTimeline] | None = None) -> list[dict]:
        """Add items (one embedding row each); return those actually added.

        `windows`: per item, its `ItemTimeline` (embeddings under `self.windows.space`); an index that
        holds windows takes only items that come with them.
        Content already indexed is skipped. An item whose path is indexed with other content (the
        file was edited) replaces the old entry.
        """
        if (windows is None) != (self.windows is None) or (windows is not None and len(windows) != len(items)):
            raise ValueError("an index with windows takes items with windows (one entry per item), and only those")
        embeddings = np.asarray(embeddings, np.float32).reshape(len(items), -1)
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings are {embeddings.shape[1]}-d, the index holds {self.dim}-d")
        seen = {it["id"] for it in self.items}
        keep = []
        for i, item in enumerate(items):
            if item["id"] not in seen:
                seen.add(item["id"])
                keep.append(i)
        added = [items[i] for i in keep]
        self.remove(it["path"] for it in added)
        rows = embeddings[keep]
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        if windows is not None:
            self.windows = self.windows.extend(len(self.items), [windows[i] for i in keep])
        self.items = self.items + added
        self.embeddings = np.concatenate([self.embeddings, rows])
        self._faiss = None
        return added

    def remove(self, keys: Iterable[str]) -> list[dict]:
        """Remove the items whose id or path is among `keys`; return them."""
        keys = set(keys)
        gone = [i for i, it in enumerate(self.items) if it["id"] in keys or it["path"] in keys]
        if gone:
            kept = np.setdiff1d(np.arange(len(self.items)), gone)
            removed = [self.items[i] for i in gone]
            if self.windows is not None:
                self.windows = self.windows.without(np.array(gone))
            self.items = [self.items[i] for i in kept]
            self.embeddings = self.embeddings[kept]
            self._faiss = None
            return removed
        return []

    def search(self, query: np.ndarray, k: int = 10, filters: Filters | None = None) -> list[tuple[dict, float]]:
        """The k items nearest the query vector (cosine), best first, among those the filters keep."""
        if len(self) == 0 or k <= 0:
            return []
        query = np.asarray(query, np.float32).reshape(1, self.dim)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        params = None
        if filters is not None:
            ids = np.array([i for i, it in enumerate(self.items) if filters.keep(it)], dtype=np.int64)
            if not len(ids):
                return []
            selector = faiss.IDSelectorBatch(ids)
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, k))
                      if self.approximate else faiss.SearchParameters(sel=selector))
        searcher = self._searcher()
        # One query is microseconds of work per thread: a second thread only adds a wait on a busy host
        # (10k items: 0.6 ms on one thread, 23 ms on two; bench/search_latency.py). Per OS thread.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, rows = searcher.search(query, min(k, len(self)), params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        return [(self.items[r], float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]

    def _searcher(self):
        if self._faiss is None:
            if self.approximate:
                graph = faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
                graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
                graph.hnsw.efSearch = HNSW_EF_SEARCH
                self._faiss = graph
            else:
                self._faiss = faiss.IndexFlatIP(self.dim)
            self._faiss.add(self.embeddings)
        return self._faiss

    def save(self) -> Path:
        """Write the next generation, then switch the manifest to it; older generations are deleted."""
        self.folder.mkdir(parents=True, exist_ok=True)
        gen = self.generation + 1
        names = {"items": f"items-{gen}.jsonl", "embeddings": f"embeddings-{gen}.npy", "ann": None}
        windows = None
        if self.windows is not None:
            w = self.windows
            windows = {"file": f"windows-{gen}.npz", "space": w.space, "dim": w.dim, "count": len(w)}
            write_atomic(self.folder / windows["file"],
                         lambda tmp: _save_npz(tmp, {**{name: getattr(w, name) for name in WINDOW_ARRAYS},
                                                     "embeddings": _to_int8(w.embeddings)}))
        write_atomic(self.folder / names["embeddings"], lambda tmp: _save_npy(tmp, self.embeddings))
        lines = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in self.items)
        write_atomic(self.folder / names["items"], lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        if self.approximate and len(self):
            names["ann"] = f"ann-{gen}.faiss"
            graph = self._searcher()
            write_atomic(self.folder / names["ann"], lambda tmp: tmp.write_bytes(faiss.serialize_index(graph).tobytes()))
        manifest = {
            "format": "pianoapp-index",
            "version": FORMAT_VERSION,
            "space": self.space,
            "dim": self.dim,
            "count": len(self),
            "generation": gen,
            **names,
            "windows": windows,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_atomic(self.folder / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
        self.generation = gen
        current = {name for name in names.values() if name} | ({windows["file"]} if windows else set())
        for pattern in ("items-*.jsonl", "embeddings-*.npy", "ann-*.faiss", "windows-*.npz", "*.tmp"):
            for stale in self.folder.glob(pattern):
                if stale.name not in current:
                    stale.unlink(missing_ok=True)
        return self.folder


def read_manifest(folder: Path) -> dict:
    """The manifest of an index folder, checked; a missing, foreign or outdated index is a sentence."""
    rebuild = f"build one with `pianoapp index build PATH... --out {folder}`"
    if not folder.is_dir():
        raise BadInputError(f"There is no index at {folder}; {rebuild}.")
    path = folder / MANIFEST
    if not path.is_file():
        raise BadInputError(f"{folder} is not a Pianoapp index (it has no {MANIFEST}); {rebuild}.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        version = manifest["version"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"The index manifest {path} is damaged ({brief(err)}); rebuild the index.") from err
    if version != FORMAT_VERSION:
        age = "an older" if isinstance(version, int) and version < FORMAT_VERSION else "another"
        raise BadInputError(
            f"The index at {folder} was written by {age} version of Pianoapp (format {version}, this one "
            f"reads format {FORMAT_VERSION}); rebuild it with `pianoapp index build PATH... --out {folder}`."
        )
    missing = [k for k in ("space", "dim", "generation", "items", "embeddings") if k not in manifest]
    if missing:
        raise CorruptFileError(f"The index manifest {path} is damaged (no {', '.join(missing)}); rebuild the index.")
    return manifest


def _read_windows(folder: Path, manifest: dict, n_items: int) -> Windows:
    meta = manifest["windows"]
    try:
        with np.load(folder / meta["file"], allow_pickle=False) as f:
            arrays = {name: f[name] for name in WINDOW_ARRAYS if name != "cohort" or name in f}
        # Windows saved before items carried cohort statistics get the neutral ones matching uses
        # without a cohort; their space (which names the cohort) differs, so matching asks for a rebuild.
        arrays.setdefault("cohort", np.tile(np.float32([0.0, 1.0]), (n_items, 1)))
        arrays["embeddings"] = _from_int8(arrays["embeddings"])
        windows = Windows(meta["space"], **arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CorruptFileError(f"The index at {folder} is damaged ({brief(err)}); rebuild it.") from err
    owners_fit = all(not len(o) or (o.max() < n_items and np.all(np.diff(o) >= 0))
                     for o in (windows.owner, windows.chroma_owner))
    if (windows.embeddings.shape != (meta["count"], meta["dim"]) or len(windows.start_s) != meta["count"]
            or len(windows.chroma) != len(windows.chroma_owner) or len(windows.cohort) != n_items or not owners_fit):
        raise CorruptFileError(f"The index at {folder} is damaged (its windows do not fit its items); rebuild it.")
    return windows


def is_index(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST).is_file()


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the folder's writer lock (across processes) from opening an index to saving it.

    The lock is on the folder itself, so no lock file is left behind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save given a name would append ".npy" to it
        np.save(f, array)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)  # chroma is mostly zeros


def _to_int8(rows: np.ndarray) -> np.ndarray:
    """Unit rows as int8, each scaled so its largest component is ±127: a quarter of float32 on disk,
    cosine similarities within about 0.01."""
    rows = rows.astype(np.float32)
    return np.round(rows / np.maximum(np.abs(rows).max(axis=1, keepdims=True), 1e-12) * 127).astype(np.int8)


def _from_int8(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float16)
