"""Explore: the CKA estimator, maps of real indexes (cached fits, placed points), CKA on real test
segments, the CLI's HTML and the tab."""

import json
import shutil

import numpy as np
import pytest

from pianoapp import constants
from pianoapp.cli import main
from pianoapp.descriptors import A4_BAND_EDGES_HZ
from pianoapp.errors import BadInputError
from pianoapp.evaluate.cka import linear_cka
from pianoapp.index import Index
from pianoapp.services import explore, library

MATCHER = constants.MODELS_DIR / "matcher" / "model.safetensors"
needs_matcher = pytest.mark.skipif(not MATCHER.is_file(), reason="models/matcher is not shipped in this checkout")


@pytest.fixture(autouse=True)
def map_cache(tmp_path, monkeypatch):
    """Fitted maps go to a fresh cache; renders of the test split are still read from the real one."""
    cache = tmp_path / "maps"
    monkeypatch.setattr(explore, "_cache_root", lambda: cache)
    return cache


# CKA ---------------------------------------------------------------------------------------------


def test_cka_is_one_for_the_same_representation_rotated_or_scaled():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 24))
    rotation, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    got = linear_cka([x], [x, x @ rotation, 3.0 * x + 1.0], batch_size=100)
    np.testing.assert_allclose(got, 1.0, atol=1e-9)


def test_unbiased_cka_of_independent_noise_is_near_zero_and_related_data_in_between():
    rng = np.random.default_rng(1)
    x, noise = rng.normal(size=(512, 32)), rng.normal(size=(512, 48))
    half = np.hstack([x[:, :16], rng.normal(size=(512, 16))])  # shares half of x's directions
    got = linear_cka([x], [noise, half], batch_size=128)[0]
    assert abs(got[0]) < 0.03  # the biased estimator sits near 0.2 here (d/n per minibatch)
    assert 0.3 < got[1] < 0.8


def test_cka_needs_four_samples_and_a_matcher_where_one_is_named(tmp_path):
    with pytest.raises(BadInputError):
        linear_cka([np.ones((3, 2))], [np.ones((3, 2))])
    with pytest.raises(BadInputError, match="model.safetensors"):
        explore.cka(baseline_dir=tmp_path)


@needs_matcher
def test_cka_on_real_test_segments_is_seeded_and_drops_each_band(data_dir):
    args = {"seed": 3, "n_segments": 8, "batch_size": 4, "data_dir": data_dir}
    first = explore.cka(**args)
    explore._cka_done.clear()  # compute again, not from the in-process memo
    again = explore.cka(**args)
    assert first == {**again, "seconds": first["seconds"]}
    model = first["models"][0]
    assert model["arm"] == "a4" and np.array(model["matrix"]).shape == (4, 4) and first["segments"] == 8
    assert model["paired_cosine"] > model["unpaired_cosine"]  # a trained matcher pairs what belongs together
    assert [b["band"] for b in first["bands"]] == [*range(len(A4_BAND_EDGES_HZ) - 1), "all"]
    assert first["bands"][-1]["delta_paired_cosine"] < 0  # without A4 at all, pairs agree less
    figures = explore.cka_figures(first)
    assert len(figures) == 2 and figures[0].data[0].texttemplate == "%{z:.2f}"


# Maps ----------------------------------------------------------------------------------------------


def _clustered_index(folder, n_clusters=6, per_cluster=10, seed=0) -> Index:
    """A real index of items whose embeddings form clear clusters (no text model needed)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, 384))
    rows = np.repeat(centres, per_cluster, axis=0) + 0.3 * rng.normal(size=(n_clusters * per_cluster, 384))
    items = [{"id": f"item{k:03d}", "path": f"{folder}/piece{k}.mid", "title": f"piece {k}",
              "composer": f"composer {k // per_cluster}", "collection": "synthetic", "key": "C major",
              "tempo_bpm": 60.0 + k, "duration_s": 10.0 + k} for k in range(len(rows))]
    index = Index.create(folder, library.SPACE, 384)
    index.add(items, rows)
    index.save()
    return index


def _nearest_item(result: explore.Map, x: float, y: float) -> dict:
    xy = np.array([[p["x"], p["y"]] for p in result.points])
    return result.points[int(np.argmin(np.linalg.norm(xy - [x, y], axis=1)))]


def test_map_is_cached_refits_only_on_big_changes_and_places_points_by_transform(tmp_path, map_cache):
    folder = tmp_path / "idx"
    index = _clustered_index(folder)
    first = explore.umap_map(folder, colour_by="composer", seed=0)
    assert first.refit and len(first.points) == len(index)
    again = explore.umap_map(folder, colour_by="tempo", seed=0)  # colour is drawing only: no refit
    assert not again.refit and [p["x"] for p in again.points] == [p["x"] for p in first.points]

    # An extra point, close to item 23, lands by one of item 23's cluster in the 2-D map.
    probe = explore.Extra("probe", index.embeddings[23] + 0.01)
    placed = explore.umap_map(folder, colour_by="composer", seed=0, extras=[probe])
    assert not placed.refit and placed.extras[0]["nearest"][0]["title"] == "piece 23"
    assert _nearest_item(placed, placed.extras[0]["x"], placed.extras[0]["y"])["composer"] == "composer 2"

    # 3 of 60 added (5%): placed without refitting; 10 more (> 10%): refitted.
    rows = index.embeddings[:3] + 0.01
    index.add([{**it, "id": it["id"] + "b", "path": it["path"] + "b"} for it in index.items[:3]], rows)
    index.save()
    grown = explore.umap_map(folder, seed=0)
    assert not grown.refit and len(grown.points) == 63
    assert grown.place_s > 0 and grown.points[-3]["x"] != first.points[0]["x"]
    index.add([{**it, "id": it["id"] + "c", "path": it["path"] + "c"} for it in index.items[:10]],
              index.embeddings[:10] + 0.01)
    index.save()
    assert explore.umap_map(folder, seed=0).refit
    (slot,) = map_cache.iterdir()
    assert len(list(slot.glob("reducer-*.pkl"))) == 1  # the old fit's reducer is gone


def test_tsne_map_places_points_among_their_neighbours(tmp_path):
    folder = tmp_path / "idx"
    index = _clustered_index(folder, seed=1)
    probe = explore.Extra("probe", index.embeddings[41] + 0.01)
    result = explore.umap_map(folder, method="tsne", seed=0, extras=[probe])
    assert _nearest_item(result, result.extras[0]["x"], result.extras[0]["y"])["composer"] == "composer 4"


@needs_matcher
def test_map_of_a_small_real_index_and_an_upload(tmp_path, assets_dir):
    midis = sorted(assets_dir.glob("*.mid"))
    library.build_index(midis, tmp_path / "idx")
    upload = tmp_path / "upload" / "mozart_k545_opening.mid"  # the same piece, uploaded under its name
    upload.parent.mkdir()
    shutil.copy(assets_dir / "mozart_k545_opening.mid", upload)
    result = explore.umap_map(tmp_path / "idx", extras=[explore.file_point(upload)])
    assert sorted(p["title"] for p in result.points) == sorted(library._title(m) for m in midis)
    extra = result.extras[0]
    assert extra["nearest"][0]["title"] == "mozart k545 opening" and extra["nearest"][0]["cosine"] > 0.9
    xs = [p["x"] for p in result.points]
    assert min(xs) - 10 < extra["x"] < max(xs) + 10  # on the map, not thrown off it
    with pytest.raises(BadInputError, match="Colour by"):
        explore.umap_map(tmp_path / "idx", colour_by="mood")


@needs_matcher
def test_cli_writes_standalone_html_and_json(tmp_path, capsys):
    folder = tmp_path / "idx"
    _clustered_index(folder)
    out = tmp_path / "maps" / "map.html"
    code = main(["explore", "umap", "--index", str(folder), "--out", str(out), "--json", "--colour", "key"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    page = out.read_text()
    assert "plotly" in page.lower() and len(page) > 1_000_000  # plotly.js itself is inside: opens offline
    doc = json.loads(captured.out)
    assert len(doc["points"]) == 60 and {"x", "y", "title"} <= set(doc["points"][0]) and "fit_s" in doc
    assert main(["explore", "umap", "--index", str(folder)]) == 2  # neither --out nor --json


def test_tab_builds():
    import gradio as gr

    from pianoapp.ui import explore as tab

    with gr.Blocks() as demo:
        tab.build()
    ids = {block.elem_id for block in demo.blocks.values()}
    assert {"explore-map", "explore-clicked"} <= ids
