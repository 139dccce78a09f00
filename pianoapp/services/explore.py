"""Explore: a map of an index's item embeddings (UMAP, or t-SNE) and CKA between the matcher's audio
and MIDI encoder layers; what the Explore tab and `pianoapp explore` show.

Map. `umap_map` lays out every item of an index (the demo index by default, plus the user's own with
`with_user_index`) in two dimensions, from the embeddings the index holds: nothing is embedded again.
A fit is cached on disk ($XDG_CACHE_HOME/pianoapp/maps-v1/, one slot per set of index folders,
method and seed) and reused while the items differ from those it was fitted on by at most
REFIT_CHANGE (items added plus removed, as a share of those fitted). Items added since, and extra
points (an upload, a text query, embedded as the index embeds its items), are placed without
refitting: UMAP's `transform`; t-SNE has none, so there a point goes to the similarity-weighted mean
of the places of its nearest items. Drawing from the cache reads coordinates only (no UMAP import,
no numba compile).

CKA. `cka` compares every audio-encoder layer with every MIDI-encoder layer (mean-pooled states) on
paired 4 s segments of the test split, drawn with the seed and rendered with FluidR3_GM at the
written tempo, as the matcher evaluation renders them. Linear CKA is estimated with the unbiased
minibatch HSIC of Nguyen, Raghu & Kornblith (2021): HSIC_1 (Song et al. 2012) of the linear kernels is
summed over minibatches, then CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)); the minibatch size
does not bias it, and unrelated representations score near 0 rather than a positive floor. The
model (default models/matcher, arm a4) is shown beside a baseline (default models/matcher-d0).
The A4 band effect drops one octave band of A4 at a time (its energy and delta rows set to 0, which
is the band's own mean, since A4 is z-scored within each segment) and reports the change in mean CKA
and in paired audio–MIDI cosine similarity.

CLI:
    pianoapp explore umap [--index DIR] [--colour C] [--method umap|tsne] [--file F]... [--query T]...
                          [--seed N] --out FILE.html [--json]
    pianoapp explore cka [--model DIR] [--baseline DIR] [--segments N] [--seed N] --out FILE.html [--json]
--out writes one standalone HTML file (plotly.js inside: it opens offline), and a PNG beside it when
kaleido is installed. --json prints `Map.to_json()` (points with x, y; extras; fit, place and draw
seconds) or the `cka` dict (matrices, means, band effects).
"""

import hashlib
import importlib.util
import json
import os
import pickle
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pianoapp import constants
from pianoapp.errors import BadInputError
from pianoapp.evaluate.cka import linear_cka
from pianoapp.io.files import write_atomic
from pianoapp.services import library
from pianoapp.services.preview import clock

# The map -----------------------------------------------------------------------------------------

COLOURS = ("source", "collection", "composer", "key", "tempo", "duration")
METHODS = ("umap", "tsne")
REFIT_CHANGE = 0.10  # refit once more than this share of the fitted items was added or removed
MIN_ITEMS = 5  # fewer than this is not a map
TOP_CATEGORIES = 12  # colours in a categorical legend; the rest are drawn grey as "other"
UMAP_NEIGHBOURS = 15
MAP_VERSION = 1  # bump when what a cached fit holds changes
POINT_FIELDS = ("id", "path", "title", "composer", "collection", "key", "tempo_bpm", "duration_s")
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
           "#FF9DA6", "#79706E", "#1B9E77", "#7570B3")  # Tableau-like, one per TOP_CATEGORIES
OTHER = "#C8C8C8"
EXTRA_COLOUR = "#111111"


@dataclass(frozen=True, eq=False)  # hashed by identity (the app's state is hashed); an array has no hash
class Extra:
    """A point placed on a map without refitting: an upload or a text query, embedded as the index
    embeds its items."""

    label: str
    embedding: np.ndarray


def file_point(path: str | os.PathLike) -> Extra:
    """A recording, MIDI file or score as a map point (recordings are transcribed first)."""
    return Extra(Path(path).name, library.embed_file(path))


def text_point(text: str) -> Extra:
    """A description in words as a map point."""
    if not text.strip():
        raise BadInputError("Type a description to place on the map.")
    return Extra(f"“{text.strip()}”", library.embed_texts([text.strip()])[0])


@dataclass
class Map:
    figure: go.Figure
    points: list[dict]  # one per item: POINT_FIELDS plus x, y
    extras: list[dict]  # one per Extra: label, x, y and its nearest items by cosine
    method: str
    colour_by: str
    seed: int
    refit: bool  # fitted in this call (no cached fit, or the index changed too much)
    fit_s: float  # 0 when the cached fit served
    place_s: float  # placing new items and extras without refitting
    draw_s: float  # building the figure

    def to_json(self) -> dict:
        return {"method": self.method, "colour_by": self.colour_by, "seed": self.seed, "refit": self.refit,
                "fit_s": round(self.fit_s, 3), "place_s": round(self.place_s, 3), "draw_s": round(self.draw_s, 3),
                "points": self.points, "extras": self.extras}

    def summary(self) -> list[str]:
        """What the map shows and how it was made, then where each extra point landed."""
        how = f"fitted in {self.fit_s:.1f} s" if self.refit else "the saved layout"
        placed = f", {len(self.extras)} placed in {self.place_s:.1f} s" if self.extras else ""
        lines = [f"{len(self.points):,} pieces, {METHOD_NAMES[self.method]} ({how}{placed})"]
        return lines + [f"{e['label']} lands near {'; '.join(n['title'] for n in e['nearest'])}" for e in self.extras]


METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE"}


def umap_map(index_dir: str | os.PathLike | None = None, *, colour_by: str = "source", method: str = "umap",
             seed: int = 0, with_user_index: bool = False, extras: Sequence[Extra] = ()) -> Map:
    """A 2-D map of every item of the index (default: the demo index; with `with_user_index` the
    user's own files too), coloured by `colour_by` (one of COLOURS), with `extras` highlighted.
    The same index, method and seed give the same map."""
    if colour_by not in COLOURS:
        raise BadInputError(f"Colour by one of {', '.join(COLOURS)}, not '{colour_by}'.")
    if method not in METHODS:
        raise BadInputError(f"The map method is umap or tsne, not '{method}'.")
    indexes = library.open_indexes(index_dir, with_user_index)
    items, rows, seen = [], [], set()
    for index in indexes:  # an upload of a demo file is one item, not two
        for item, row in zip(index.items, index.embeddings, strict=True):
            if item["id"] not in seen:
                seen.add(item["id"])
                items.append(item)
                rows.append(row)
    if len(items) < MIN_ITEMS:
        raise BadInputError(f"A map needs at least {MIN_ITEMS} pieces; this index holds {len(items)}. "
                            "Add files to it first.")
    embeddings = np.asarray(rows, np.float32)
    slot = _cache_root() / _slot_name([ix.folder for ix in indexes], indexes[0].space, method, seed)
    with _lock:
        layout = _Layout.load(slot, method) or _Layout(slot, method)
        coords, fit_s, place_s = layout.coordinates([it["id"] for it in items], embeddings, seed,
                                                    will_place=bool(extras))
        t0 = time.perf_counter()
        extra_xy = layout.place(np.array([e.embedding for e in extras], np.float32), embeddings, coords) if extras else []
        place_s += time.perf_counter() - t0
    points = [{**{f: it.get(f) for f in POINT_FIELDS}, "x": round(float(x), 4), "y": round(float(y), 4)}
              for it, (x, y) in zip(items, coords, strict=True)]
    placed = [{"label": e.label, "x": round(float(x), 4), "y": round(float(y), 4),
               "nearest": _nearest(e.embedding, embeddings, items)} for e, (x, y) in zip(extras, extra_xy, strict=True)]
    t0 = time.perf_counter()
    figure = map_figure(points, placed, colour_by=colour_by,
                        title=f"{METHOD_NAMES[method]} of {len(points):,} pieces' embeddings ({indexes[0].space})")
    return Map(figure, points, placed, method, colour_by, seed, refit=fit_s > 0, fit_s=fit_s, place_s=place_s,
               draw_s=time.perf_counter() - t0)


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pianoapp" / f"maps-v{MAP_VERSION}"


def _slot_name(folders: list[Path], space: str, method: str, seed: int) -> str:
    key = json.dumps([sorted(str(f) for f in folders), space, method, seed, UMAP_NEIGHBOURS])
    return hashlib.sha1(key.encode()).hexdigest()[:16]


_lock = threading.Lock()  # fits and cache writes one at a time in a process


class _Layout:
    """One cached fit: the ids it was fitted on, the coordinates of every item placed so far, and the
    fitted UMAP (t-SNE keeps none). layout.json is the commit point: it names its reducer file, written
    first, so a reader never pairs one fit's coordinates with another fit's reducer."""

    def __init__(self, slot: Path, method: str, fitted: list[str] | None = None,
                 coords: dict[str, list[float]] | None = None, reducer_file: str | None = None):
        self.slot, self.method = slot, method
        self.fitted = fitted or []
        self.coords = coords or {}
        self.reducer_file = reducer_file
        self._reducer = None

    @classmethod
    def load(cls, slot: Path, method: str) -> "_Layout | None":
        try:
            state = json.loads((slot / "layout.json").read_text())
            return cls(slot, method, state["fitted"], state["coords"], state.get("reducer"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def coordinates(self, ids: list[str], embeddings: np.ndarray, seed: int, *,
                    will_place: bool) -> tuple[np.ndarray, float, float]:
        """(n, 2) coordinates of these items, refitting if needed; and the fit and place seconds.
        `will_place`: extras follow, so a UMAP reducer must be at hand."""
        fitted = set(self.fitted)
        changed = len(fitted.symmetric_difference(ids)) / max(len(fitted), 1)
        new = [k for k, i in enumerate(ids) if i not in self.coords]
        needs_reducer = self.method == "umap" and (new or will_place)
        fit_s = place_s = 0.0
        if changed > REFIT_CHANGE or (needs_reducer and self.reducer() is None):
            t0 = time.perf_counter()
            xy, self._reducer = _fit(embeddings, self.method, seed)
            fit_s = time.perf_counter() - t0
            self.fitted, self.coords = list(ids), {i: [float(a), float(b)] for i, (a, b) in zip(ids, xy, strict=True)}
            self._save(reducer=True)
        elif new:
            t0 = time.perf_counter()
            known = [k for k, i in enumerate(ids) if i in self.coords]
            xy = self.place(embeddings[new], embeddings[known], np.array([self.coords[ids[k]] for k in known]))
            self.coords.update({ids[k]: [float(a), float(b)] for k, (a, b) in zip(new, xy, strict=True)})
            place_s = time.perf_counter() - t0
            self._save(reducer=False)
        return np.array([self.coords[i] for i in ids], np.float32), fit_s, place_s

    def place(self, queries: np.ndarray, embeddings: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Map coordinates for new embeddings, without refitting: UMAP's transform; for t-SNE, from
        the placed items' `embeddings` and their `coords`."""
        if self.method == "umap":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.reducer().transform(queries)
        return _knn_place(queries, embeddings, np.asarray(coords, np.float32))

    def reducer(self):
        """The fitted UMAP, read from the slot on first use (None if absent or unreadable)."""
        if self._reducer is None and self.reducer_file:
            try:
                # Written by this program into the user's own cache folder, never read from an index.
                self._reducer = pickle.loads((self.slot / self.reducer_file).read_bytes())
            except Exception:  # noqa: BLE001 - a missing, partial or outdated pickle means: fit again
                return None
        return self._reducer

    def _save(self, *, reducer: bool) -> None:
        self.slot.mkdir(parents=True, exist_ok=True)
        if reducer:
            self.reducer_file = f"reducer-{time.time_ns()}.pkl" if self._reducer is not None else None
            if self.reducer_file:
                write_atomic(self.slot / self.reducer_file, lambda tmp: tmp.write_bytes(pickle.dumps(self._reducer)))
        doc = {"method": self.method, "fitted": self.fitted, "coords": self.coords, "reducer": self.reducer_file}
        write_atomic(self.slot / "layout.json", lambda tmp: tmp.write_text(json.dumps(doc)))
        for stale in self.slot.glob("reducer-*.pkl"):
            if stale.name != self.reducer_file:
                stale.unlink(missing_ok=True)


def _fit(embeddings: np.ndarray, method: str, seed: int):
    """(n, 2) coordinates and the fitted reducer (None for t-SNE)."""
    n = len(embeddings)
    with warnings.catch_warnings():  # UMAP warns that a seed means one thread, t-SNE about its defaults
        warnings.simplefilter("ignore")
        if method == "umap":
            import umap

            # Rows are unit vectors, so euclidean distance orders neighbours exactly as cosine does.
            reducer = umap.UMAP(n_neighbors=min(UMAP_NEIGHBOURS, n - 1), min_dist=0.1, random_state=seed)
            return reducer.fit_transform(embeddings), reducer
        from sklearn.manifold import TSNE

        tsne = TSNE(perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
        return tsne.fit_transform(embeddings), None


def _knn_place(queries: np.ndarray, embeddings: np.ndarray, xy: np.ndarray, k: int = 10) -> np.ndarray:
    """Each query at the mean place of its k most similar rows, weighted by exp(cosine / 0.05)."""
    sims = _unit(queries) @ _unit(embeddings).T
    top = np.argsort(-sims, axis=1)[:, :k]
    near = np.take_along_axis(sims, top, axis=1)
    weights = np.exp((near - near[:, :1]) / 0.05)
    return np.einsum("qk,qkd->qd", weights / weights.sum(axis=1, keepdims=True), xy[top])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _nearest(query: np.ndarray, embeddings: np.ndarray, items: list[dict], k: int = 3) -> list[dict]:
    sims = _unit(embeddings) @ _unit(query)
    return [{"title": items[i]["title"], "composer": items[i]["composer"], "cosine": round(float(sims[i]), 4)}
            for i in np.argsort(-sims)[:k]]


def colour_values(points: list[dict], colour_by: str) -> list:
    """What each point is coloured by: a category name, or a number for tempo and duration."""
    if colour_by == "tempo":
        return [float(p["tempo_bpm"] or 0.0) for p in points]
    if colour_by == "duration":
        return [float(p["duration_s"] or 0.0) for p in points]
    if colour_by == "source":  # demo items: their music21 corpus folder (a composer or a tune book)
        return [p["path"].removeprefix(library.MUSIC21_PREFIX).split("/")[0]
                if p["path"].startswith(library.MUSIC21_PREFIX) else p["collection"] for p in points]
    return [p[colour_by] or "unknown" for p in points]


def map_figure(points: list[dict], extras: list[dict], *, colour_by: str, title: str) -> go.Figure:
    """The map as a plotly figure (WebGL markers). Each marker's customdata is [id, title, detail]:
    hover shows the title, the composer and the colouring value; the app reads a clicked point's id."""
    values = colour_values(points, colour_by)
    figure = go.Figure()
    hover = "<b>%{customdata[1]}</b><br>%{customdata[2]}<extra></extra>"
    if colour_by in ("tempo", "duration"):
        tempo = colour_by == "tempo"
        shown = [f"{v:.0f} BPM" if tempo else clock(v) for v in values]
        ticks = [10, 30, 60, 120, 300, 600, 1200]
        colorbar = ({"title": "BPM"} if tempo else
                    {"title": "length", "tickvals": np.log10(ticks).tolist(), "ticktext": [clock(t) for t in ticks]})
        colour = np.array(values) if tempo else np.log10(np.maximum(values, 1.0))  # lengths span 8 s to 15 min
        figure.add_trace(_scatter(points, shown, name=colour_by, hovertemplate=hover, showlegend=False,
                                  marker={"size": 7, "color": colour, "colorscale": "Viridis",
                                          "colorbar": colorbar, "opacity": 0.85}))
    else:
        counts = Counter(values)
        top = [name for name, _ in counts.most_common(TOP_CATEGORIES)]
        groups = [(name, [k for k, v in enumerate(values) if v == name], PALETTE[c]) for c, name in enumerate(top)]
        rest = [k for k, v in enumerate(values) if v not in set(top)]
        groups += [("other", rest, OTHER)] if rest else []
        for name, rows, colour in groups:
            figure.add_trace(_scatter([points[k] for k in rows], [values[k] for k in rows],
                                      name=f"{name} ({len(rows)})", hovertemplate=hover,
                                      marker={"size": 7, "color": colour, "opacity": 0.85}))
    if extras:
        figure.add_trace(go.Scattergl(
            x=[e["x"] for e in extras], y=[e["y"] for e in extras], mode="markers+text", name="yours",
            text=[e["label"] for e in extras], textposition="top center",
            customdata=[["", e["label"], "near " + "; ".join(n["title"] for n in e["nearest"])] for e in extras],
            hovertemplate=hover, marker={"size": 18, "symbol": "star", "color": "#FFD400",
                                         "line": {"width": 1.5, "color": EXTRA_COLOUR}}))
    figure.update_layout(title={"text": title, "font": {"size": 14}}, template="plotly_white", height=560,
                         margin={"l": 10, "r": 10, "t": 50, "b": 10},
                         legend={"title": colour_by, "itemsizing": "constant"}, clickmode="event")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def _scatter(points: list[dict], shown: list, **kwargs) -> go.Scattergl:
    """Markers for some points; `shown` is each one's colouring value, said on hover after the composer."""
    details = [" · ".join(str(x) for x in dict.fromkeys((p["composer"], v)) if x)
               for p, v in zip(points, shown, strict=True)]
    return go.Scattergl(x=[p["x"] for p in points], y=[p["y"] for p in points], mode="markers",
                        customdata=[[p["id"], p["title"], d] for p, d in zip(points, details, strict=True)], **kwargs)


# CKA ---------------------------------------------------------------------------------------------

DEFAULT_MODEL = constants.MODELS_DIR / "matcher"
DEFAULT_BASELINE = constants.MODELS_DIR / "matcher-d0"
CKA_SOUNDFONT = "FluidR3_GM"
Progress = Callable[[int, int], None]  # (batches done, batches in all)


_cka_done: dict[tuple, dict] = {}  # same checkpoints and arguments: the same numbers, so computed once


def cka(model_dir: str | os.PathLike | None = None, baseline_dir: str | os.PathLike | None = None, *,
        seed: int = 0, n_segments: int = 512, batch_size: int = 128, data_dir: str | os.PathLike | None = None,
        progress: Progress | None = None) -> dict:
    """Layer-by-layer CKA of the model (and the baseline, if there is one) and the model's A4 band
    effect, as a JSON-ready dict (see the module docstring); the same arguments give the same numbers.

    {"split", "soundfont", "seed", "segments", "batch_size", "estimator",
     "models": [{"role", "dir", "arm", "matrix" (audio layers × MIDI layers), "mean", "paired_cosine",
                 "unpaired_cosine"}],
     "baseline_note" (why no baseline, or None), "bands": [{"band", "hz", "delta_mean_cka",
     "delta_paired_cosine"}, ..., {"band": "all", ...}] or None, "bands_note", "seconds"}
    """
    from pianoapp.descriptors import A4_BAND_EDGES_HZ  # torch: only when CKA runs, never for the app's start
    from pianoapp.models.checkpoint import load_config

    if n_segments < 4 or batch_size < 4:
        raise BadInputError("CKA needs at least 4 segments and minibatches of at least 4.")
    for given in (model_dir, baseline_dir):  # a folder the user names must hold a model
        if given is not None and not (Path(given) / "model.safetensors").is_file():
            raise BadInputError(f"{given} holds no model.safetensors; name a folder written by "
                                "`pianoapp train matcher`.")
    dirs = [("model", Path(model_dir) if model_dir is not None else DEFAULT_MODEL)]
    note = None
    if baseline_dir is not None:
        dirs.append(("baseline", Path(baseline_dir)))
    elif (DEFAULT_BASELINE / "model.safetensors").is_file():
        dirs.append(("baseline", DEFAULT_BASELINE))
    else:
        note = (f"No baseline: {_shown(DEFAULT_BASELINE)} (the D0 arm, no descriptors) is not trained yet; "
                "the model is shown alone.")
    configs = [load_config(d) for _, d in dirs]  # a missing model is a sentence before any data is read
    for (_, folder), config in zip(dirs, configs, strict=True):
        if config["family"] != "matcher":
            raise BadInputError(f"{folder} holds a '{config['family']}' model, not a matcher; CKA compares "
                                "the matcher's encoders.")
    key = (tuple((str(d.resolve()), _mtime(d)) for _, d in dirs), seed, n_segments, batch_size, str(data_dir))
    if key in _cka_done:
        return _cka_done[key]
    t0 = time.perf_counter()
    seconds = configs[0].get("data", {}).get("render_seconds", 60.0)
    batches = _test_batches(seed, n_segments, batch_size, seconds, data_dir)
    total, done = len(batches) * len(dirs), 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    models, bands, bands_note = [], None, None
    for (role, folder), config in zip(dirs, configs, strict=True):
        states = _states(folder, batches, with_bands=role == "model", step=step)
        matrix = linear_cka(states["audio"], states["midi"], batch_size=batch_size)
        models.append({"role": role, "dir": _shown(folder), "arm": _arm(config["model"]),
                       "matrix": np.round(matrix, 4).tolist(), "mean": round(float(matrix.mean()), 4),
                       **_cosines(states["audio_emb"], states["midi_emb"])})
        if role == "model" and states["variants"]:
            bands = []
            for band, (hidden, emb) in states["variants"].items():
                changed = linear_cka(hidden, states["midi"], batch_size=batch_size)
                bands.append({"band": band, "hz": list(A4_BAND_EDGES_HZ[band:band + 2]) if band != "all" else None,
                              "delta_mean_cka": round(float(changed.mean() - matrix.mean()), 4),
                              "delta_paired_cosine": round(_paired_cosine(emb, states["midi_emb"])
                                                           - _paired_cosine(states["audio_emb"], states["midi_emb"]), 4)})
        elif role == "model":
            bands_note = f"{_shown(folder)} takes no A4 descriptor ({_arm(config['model'])}): no band effect to show."
    result = {
        "split": "test", "soundfont": CKA_SOUNDFONT, "seed": seed, "segments": sum(len(b["audio"]) for b in batches),
        "batch_size": batch_size,
        "estimator": "linear CKA, unbiased minibatch HSIC (Nguyen et al. 2021) over mean-pooled layer states",
        "models": models, "baseline_note": note, "bands": bands, "bands_note": bands_note,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _cka_done[key] = result
    return result


def _mtime(folder: Path) -> int:
    weights = folder / "model.safetensors"
    return weights.stat().st_mtime_ns if weights.is_file() else 0


def _shown(folder: Path) -> str:
    """A model folder as the user would write it: relative to the repository when inside it."""
    try:
        return str(folder.resolve().relative_to(constants.REPO_ROOT))
    except ValueError:
        return str(folder)


def _arm(model: dict) -> str:
    """The paper's name for a matcher's descriptor arm: D0, a4, d4 or d4a4."""
    return ("d4" if model.get("use_d4") else "") + ("a4" if model.get("use_a4") else "") or "D0"


def _test_batches(seed: int, n_segments: int, batch_size: int, seconds: float, data_dir) -> list[dict]:
    """n_segments paired test segments drawn with the seed, collated in minibatches."""
    from torch.utils.data import default_collate

    from pianoapp.data.segments import Segments, matcher_pieces, render_pieces

    pieces = matcher_pieces("test", data_dir=Path(data_dir) if data_dir else None)
    segments = Segments(render_pieces(pieces, soundfonts=(CKA_SOUNDFONT,), per_piece=1, seconds=seconds))
    if len(segments) < 4:
        raise BadInputError("The test split has fewer than 4 segments; CKA needs more.")
    chosen = np.random.default_rng(seed).choice(len(segments), size=min(n_segments, len(segments)), replace=False)
    return [default_collate([segments[int(j)] for j in chosen[lo:lo + batch_size]])
            for lo in range(0, len(chosen), batch_size)]


def _states(folder: Path, batches: list[dict], *, with_bands: bool, step: Callable[[], None]) -> dict:
    """Per-layer pooled states and embeddings of both encoders (numpy, one row per segment), and for
    a model with A4 the same for the audio side with each octave band dropped ("variants")."""
    import torch

    from pianoapp.descriptors import A4_BAND_EDGES_HZ
    from pianoapp.models.checkpoint import load_model
    from pianoapp.train.trainer import to_device

    n_bands = len(A4_BAND_EDGES_HZ) - 1
    model = load_model(folder)
    device = next(model.parameters()).device
    encoder = model.audio_encoder
    out: dict = {"audio": [], "midi": [], "audio_emb": [], "midi_emb": [], "variants": {}}
    variants = [*range(n_bands), "all"] if with_bands and encoder.use_a4 else []
    parts: dict = {v: ([], []) for v in variants}
    with torch.inference_mode():
        for batch in batches:
            batch = to_device(batch, device)
            logmel, a4 = encoder.front_end(batch["audio"])
            pooled, hidden = encoder.encode(logmel, a4)
            out["audio"].append([h.float().cpu().numpy() for h in hidden])
            out["audio_emb"].append(model.audio_head(pooled).float().cpu().numpy())
            midi = model.embed_midi(batch["midi"], hidden=True)
            out["midi"].append([h.float().cpu().numpy() for h in midi.hidden])
            out["midi_emb"].append(midi.embedding.float().cpu().numpy())
            for v in variants:
                pooled, hidden = encoder.encode(logmel, _drop_band(a4, v, n_bands))
                parts[v][0].append([h.float().cpu().numpy() for h in hidden])
                parts[v][1].append(model.audio_head(pooled).float().cpu().numpy())
            step()

    def layers(chunks: list[list[np.ndarray]]) -> list[np.ndarray]:
        return [np.concatenate(per_layer) for per_layer in zip(*chunks, strict=True)]

    out["audio"], out["midi"] = layers(out["audio"]), layers(out["midi"])
    out["audio_emb"], out["midi_emb"] = np.concatenate(out["audio_emb"]), np.concatenate(out["midi_emb"])
    out["variants"] = {v: (layers(h), np.concatenate(e)) for v, (h, e) in parts.items()}
    return out


def _drop_band(a4, band: int | str, n_bands: int):
    """A4 with one octave band's energy and delta rows (or all rows) at 0: their within-segment mean."""
    dropped = a4.clone()
    if band == "all":
        dropped.zero_()
    else:
        dropped[:, [band, band + n_bands]] = 0.0  # A4's rows: the bands' energies, then their deltas
    return dropped


def _paired_cosine(audio: np.ndarray, midi: np.ndarray) -> float:
    return float(np.mean(np.sum(_unit(audio) * _unit(midi), axis=1)))


def _cosines(audio: np.ndarray, midi: np.ndarray) -> dict:
    """Mean cosine of each segment's audio and MIDI embeddings, and of mismatched pairs: the gap is
    what retrieval relies on."""
    sims = _unit(audio) @ _unit(midi).T
    n = len(sims)
    return {"paired_cosine": round(float(np.trace(sims) / n), 4),
            "unpaired_cosine": round(float((sims.sum() - np.trace(sims)) / (n * (n - 1))), 4)}


def cka_summary(result: dict) -> list[str]:
    """One line per model (mean CKA, paired cosine), then the notes: the words beside the figures."""
    lines = [f"{m['arm']} ({m['dir']}): mean CKA {m['mean']:.3f} over its {len(m['matrix'])}×{len(m['matrix'][0])} "
             f"grid; audio–MIDI cosine {m['paired_cosine']:.3f} for pairs, {m['unpaired_cosine']:.3f} for "
             "mismatched segments" for m in result["models"]]
    lines += [n for n in (result["baseline_note"], result["bands_note"]) if n]
    lines.append(f"{result['segments']} test segments ({result['soundfont']}, written tempo), seed {result['seed']}, "
                 f"minibatches of {result['batch_size']}; {result['estimator']}.")
    return lines


def cka_figure(result: dict) -> go.Figure:
    """A heatmap per model, side by side on one 0–1 scale, the value written in each cell."""
    models = result["models"]
    figure = make_subplots(rows=1, cols=len(models), horizontal_spacing=0.12,
                           subplot_titles=[f"{m['arm']} ({m['role']}): mean {m['mean']:.3f}" for m in models])
    for col, m in enumerate(models, 1):
        matrix = np.array(m["matrix"])
        figure.add_trace(go.Heatmap(
            z=matrix, x=[f"MIDI {j + 1}" for j in range(matrix.shape[1])],
            y=[f"audio {i + 1}" for i in range(matrix.shape[0])], zmin=0, zmax=1, colorscale="Viridis",
            texttemplate="%{z:.2f}", textfont={"size": 13}, showscale=col == len(models),
            colorbar={"title": "CKA"}, hovertemplate="%{y} × %{x}: %{z:.3f}<extra></extra>"), 1, col)
        figure.update_yaxes(autorange="reversed", row=1, col=col)  # read like the JSON matrix: layer 1 on top
    figure.update_layout(title={"text": "Linear CKA between audio-encoder and MIDI-encoder layers",
                                "font": {"size": 14}},
                         template="plotly_white", height=420, margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return figure


def band_figure(result: dict) -> go.Figure | None:
    """The A4 band effect as bars: change in mean CKA and in paired cosine per dropped band."""
    if not result["bands"]:
        return None
    labels = [f"{b['hz'][0]:g}–{b['hz'][1]:g} Hz" if b["hz"] else "all bands" for b in result["bands"]]
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                           subplot_titles=["change in mean CKA", "change in paired audio–MIDI cosine"])
    for col, field in enumerate(("delta_mean_cka", "delta_paired_cosine"), 1):
        values = [b[field] for b in result["bands"]]
        figure.add_trace(go.Bar(x=labels, y=values, marker_color=["#4C78A8" if b["hz"] else "#E45756"
                                                                  for b in result["bands"]],
                                text=[f"{v:+.3f}" for v in values], textposition="outside", cliponaxis=False,
                                showlegend=False,
                                hovertemplate="%{x}: %{y:+.4f}<extra></extra>"), 1, col)
    arm = result["models"][0]["arm"]
    figure.update_layout(title={"text": f"{arm}: one A4 octave band dropped at a time (set to its mean)",
                                "font": {"size": 14}}, template="plotly_white", height=400,
                         margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return figure


def cka_figures(result: dict) -> list[go.Figure]:
    return [f for f in (cka_figure(result), band_figure(result)) if f is not None]


# Files -------------------------------------------------------------------------------------------


def write_html(figures: Sequence[go.Figure], out: str | os.PathLike, *, title: str, lines: Sequence[str] = ()) -> list[Path]:
    """One standalone HTML page (plotly.js inside, so it opens offline) with the figures under a title
    and a few lines of text; with kaleido installed, a PNG of each figure beside it. Returns the paths."""
    out = Path(out)
    if out.is_dir():
        raise BadInputError(f"{out} is a folder; give a file name such as {out / 'map.html'}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"<p>{_escape(line)}</p>" for line in lines)
    plots = "".join(f.to_html(full_html=False, include_plotlyjs=k == 0) for k, f in enumerate(figures))
    out.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_escape(title)}</title></head>"
                   f"<body style='font-family: system-ui, sans-serif; max-width: 1200px; margin: 1em auto'>"
                   f"<h2>{_escape(title)}</h2>{body}{plots}</body></html>", encoding="utf-8")
    written = [out]
    if importlib.util.find_spec("kaleido") is not None:
        for k, figure in enumerate(figures):
            png = out.with_suffix(".png") if k == 0 else out.with_name(f"{out.stem}-{k + 1}.png")
            figure.write_image(png, width=1200)
            written.append(png)
    return written


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
