"""The on-disk vector index: add, search, remove, dedupe, persistence, atomic saves, clear refusals."""

import json

import numpy as np
import pytest

from pianoapp.errors import BadInputError, CorruptFileError
from pianoapp.index import Filters, Index, ItemTimeline, Windows

DIM = 8


def _items(n, start=0):
    rng = np.random.default_rng(start)
    items = [
        {"id": f"h{i}", "path": f"song{i}.mid", "title": f"Song {i}", "collection": "a" if i % 2 else "b",
         "composer": "Bach" if i % 3 == 0 else "Joplin", "key": "D minor" if i % 2 else "C major",
         "duration_s": float(10 * i)}
        for i in range(start, start + n)
    ]
    return items, rng.normal(size=(n, DIM)).astype(np.float32)


def test_search_finds_each_item_by_its_own_vector_and_scores_are_cosines(tmp_path):
    index = Index.create(tmp_path / "idx", "test-space", DIM)
    items, vecs = _items(20)
    assert len(index.add(items, vecs)) == 20 and len(index) == 20
    for i in (0, 7, 19):
        (best, score), *rest = index.search(vecs[i] * 3.0, k=5)  # scale does not matter: cosine
        assert best["id"] == f"h{i}" and score == pytest.approx(1.0, abs=1e-5)
        assert all(s <= score for _, s in rest) and len(rest) == 4
    assert index.search(vecs[0], k=100)[-1][1] >= -1.0 and len(index.search(vecs[0], k=100)) == 20


def test_dedupe_by_content_and_same_path_replaces(tmp_path):
    index = Index.create(tmp_path, "test-space", DIM)
    items, vecs = _items(5)
    index.add(items, vecs)
    again = index.add([dict(items[0]), dict(items[0], path="copy.mid")], vecs[:2])
    assert again == [] and len(index) == 5  # same content (id) is never added twice
    edited = dict(items[1], id="h1-edited")  # the file at song1.mid changed
    assert index.add([edited], vecs[1:2]) == [edited]
    assert len(index) == 5 and [it["id"] for it in index.items if it["path"] == "song1.mid"] == ["h1-edited"]


def test_remove_by_path_or_id_and_persist_reopen(tmp_path):
    folder = tmp_path / "idx"
    index = Index.create(folder, "test-space", DIM)
    items, vecs = _items(6)
    index.add(items, vecs)
    removed = index.remove(["song2.mid", "h4", "not-there"])
    assert sorted(it["id"] for it in removed) == ["h2", "h4"]
    index.save()
    again = Index.open(folder, space="test-space")
    assert [it["id"] for it in again.items] == ["h0", "h1", "h3", "h5"]
    np.testing.assert_allclose(again.embeddings[1], vecs[1] / np.linalg.norm(vecs[1]), rtol=1e-6)
    assert again.search(vecs[3], k=1)[0][0]["id"] == "h3"
    more, more_vecs = _items(2, start=10)
    again.add(more, more_vecs)
    again.save()
    assert len(Index.open(folder)) == 6
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert files == ["embeddings-2.npy", "items-2.jsonl", "manifest.json"]  # old generations are gone


def test_filters(tmp_path):
    index = Index.create(tmp_path, "test-space", DIM)
    items, vecs = _items(12)
    index.add(items, vecs)
    query = vecs[0]

    def ids(filters):
        return {it["id"] for it, _ in index.search(query, k=12, filters=filters)}

    assert ids(Filters(collection="A")) == {f"h{i}" for i in range(1, 12, 2)}
    assert ids(Filters(composer="bach")) == {"h0", "h3", "h6", "h9"}
    assert ids(Filters(key="minor")) == ids(Filters(key="D minor")) == {f"h{i}" for i in range(1, 12, 2)}
    assert ids(Filters(min_seconds=30, max_seconds=50)) == {"h3", "h4", "h5"}
    assert ids(Filters(collection="b", composer="Bach")) == {"h0", "h6"}
    assert index.search(query, k=5, filters=Filters(composer="Chopin")) == []


def test_approximate_search_agrees_with_exact_and_persists(tmp_path):
    items, vecs = _items(300)
    exact = Index.create(tmp_path / "exact", "test-space", DIM)
    approx = Index.create(tmp_path / "approx", "test-space", DIM, approximate=True)
    exact.add(items, vecs)
    approx.add(items, vecs)
    approx.save()
    assert (tmp_path / "approx" / "ann-1.faiss").is_file()
    reopened = Index.open(tmp_path / "approx", approximate=True)
    for q in vecs[:10]:
        want = [it["id"] for it, _ in exact.search(q, k=5)]
        assert [it["id"] for it, _ in reopened.search(q, k=5)][:3] == want[:3]
    filtered = reopened.search(vecs[0], k=5, filters=Filters(collection="a"))
    assert filtered and all(it["collection"] == "a" for it, _ in filtered)


def test_a_failed_save_leaves_the_old_index(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    index = Index.create(folder, "test-space", DIM)
    items, vecs = _items(4)
    index.add(items, vecs)
    index.save()
    more, more_vecs = _items(3, start=4)
    index.add(more, more_vecs)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pianoapp.index.json.dumps", crash)  # dies writing the new items, before the manifest
    with pytest.raises(OSError):
        index.save()
    monkeypatch.undo()
    survived = Index.open(folder)
    assert len(survived) == 4 and survived.search(vecs[2], k=1)[0][0]["id"] == "h2"
    index.save()  # the next save completes and cleans up the half-written generation
    assert len(Index.open(folder)) == 7
    assert not list(folder.glob("*.tmp"))


def test_missing_foreign_old_and_damaged_indexes_are_one_sentence(tmp_path):
    with pytest.raises(BadInputError, match="no index at .* build one with `pianoapp index build"):
        Index.open(tmp_path / "nowhere")
    with pytest.raises(BadInputError, match="is not a Pianoapp index"):
        Index.open(tmp_path)
    folder = tmp_path / "idx"
    index = Index.create(folder, "minilm-metadata", DIM)
    index.add(*_items(3))
    index.save()
    with pytest.raises(BadInputError, match="holds 'minilm-metadata' embeddings but search now uses 'bind'"):
        Index.open(folder, space="bind")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": 0}))
    with pytest.raises(BadInputError, match="older version of Pianoapp .*rebuild it"):
        Index.open(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / manifest["items"]).write_text('{"id": "h0", "path": "a.mid"}\n')
    with pytest.raises(CorruptFileError, match="damaged"):
        Index.open(folder)


def test_windows_saved_before_cohort_statistics_open_and_matching_asks_for_a_rebuild(tmp_path, assets_dir):
    from pianoapp.services import library, match

    folder = tmp_path / "old"
    rng = np.random.default_rng(0)
    index = Index.create(folder, library.SPACE, 384, windows=Windows.empty("matcher/before-cohort", 16))
    items, vecs = _items(2)[0], rng.normal(size=(2, 384))
    chroma = np.full((5, 12), 12 ** -0.5)
    index.add(items, vecs, [ItemTimeline(rng.normal(size=(3, 16)), np.arange(3.0), chroma, (0.3, 0.1))] * 2)
    index.save()
    npz = folder / json.loads((folder / "manifest.json").read_text())["windows"]["file"]
    with np.load(npz) as f:  # the windows file as it was before items carried cohort statistics
        np.savez_compressed(npz, **{name: f[name] for name in f.files if name != "cohort"})

    old = Index.open(folder, space=library.SPACE)
    np.testing.assert_array_equal(old.windows.cohort, [[0.0, 1.0], [0.0, 1.0]])
    assert old.search(vecs[1], k=1)[0][0]["id"] == "h1"
    with pytest.raises(BadInputError, match="another matcher checkpoint; rebuild it with `pianoapp index build"):
        match.match(assets_dir / "pedal_arpeggios.mid", index_dir=folder)


def test_best_similarities_are_each_items_closest_window():
    rng = np.random.default_rng(0)
    sizes = [3, 1, 7, 4, 2]
    timelines = [ItemTimeline(rng.standard_normal((n, 16)), np.arange(n, dtype=np.float32), np.zeros((5, 12)), (0.5, 0.1))
                 for n in sizes]
    windows = Windows.empty("test", 16).extend(0, timelines)
    queries = rng.standard_normal((3, 16))
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.array([[max(u @ (e / np.linalg.norm(e)) for e in t.embeddings) for t in timelines] for u in unit])
    np.testing.assert_allclose(windows.best_similarities(queries, np.arange(5)), exact, atol=2e-3)
    np.testing.assert_allclose(windows.best_similarities(queries, np.array([1, 3])), exact[:, [1, 3]], atol=2e-3)
    assert windows.best_similarities(queries, np.array([], int)).shape == (3, 0)
