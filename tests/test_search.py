"""Text search: the MiniLM text encoder, indexes built from real files, the CLI contract, uploads, bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pianoapp.cli import main
from pianoapp.errors import BadInputError
from pianoapp.index import Filters, Index
from pianoapp.models.text_encoder import backbone_dir, load_text_encoder
from pianoapp.services import library
from pianoapp.services.search import WORD_BONUS, browse, search, word_overlaps

WALTZES = ["waltzes10.mid", "waltzes12.mid", "waltzes21.mid"]
OTHERS = ["jigs10.mid", "jigs12.mid", "reelsa-c11.mid", "hpps10.mid"]
POP909 = ["001", "005"]
N_FILES = len(WALTZES + OTHERS + POP909)


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder()


def _files(data_dir):
    return [data_dir / "nottingham" / name for name in WALTZES + OTHERS] + [
        data_dir / "pop909" / song / f"{song}.mid" for song in POP909]


@pytest.fixture(scope="module")
def small_index(data_dir, tmp_path_factory):
    """Real tunes and songs of the shared data: their collections' metadata comes along."""
    out = tmp_path_factory.mktemp("index") / "idx"
    report = library.build_index(_files(data_dir), out)
    assert len(report.added) == N_FILES and not report.skipped
    return out


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory):
    """The same files copied into a folder of the user's: only their names and notes say what they are."""
    folder = tmp_path_factory.mktemp("tunes")
    for path in _files(data_dir):
        shutil.copy(path, folder / path.name)
    return folder


def test_text_encoder_loads_offline_and_pools_over_real_tokens(encoder):
    assert backbone_dir().is_dir() and encoder.tokenizer.name_or_path == str(backbone_dir())
    texts = ["a gentle waltz in three four", "a slow waltz in triple time", "tax forms are due in April"]
    vecs = encoder.encode(texts)
    assert vecs.shape == (3, encoder.dim) == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3
    # Padding must not leak into the mean: alone or beside a long text, the same vector.
    alone = encoder.encode([texts[0]])[0]
    padded = encoder.encode([texts[0], "word " * 200])[0]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_text_encoder_takes_any_text_but_blank(encoder):
    vecs = encoder.encode(["ä" * 10_000, "🎹🎶 piano 🎼", "一首悲伤的钢琴曲", "une valse lente et triste"])
    assert np.isfinite(vecs).all() and vecs.shape == (4, 384)
    with pytest.raises(BadInputError, match="empty"):
        encoder.encode(["  \n "])


def test_item_text_says_what_the_notes_do(small_index):
    items = Index.open(small_index).items
    waltz = next(it for it in items if it["path"].endswith("waltzes10.mid"))
    # The file is in the shared Nottingham data: its collection's metadata comes along.
    assert waltz["title"] == "Waltz 10" and waltz["collection"] == "nottingham" and waltz["metre"] == "3/4"
    for word in ("waltz", "3/4", "G major", "register"):
        assert word in waltz["text"]
    assert waltz["attributes"]["n_notes"] > 50 and waltz["duration_s"] > 10


def test_waltz_query_ranks_a_waltz_first(small_index):
    hits = search("waltz in three four", index_dir=small_index, k=5)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert hits[0]["title"].startswith("Waltz") and hits[1]["title"].startswith("Waltz")
    jig = search("a jig in six eight", index_dir=small_index, k=1)[0]
    assert jig["title"].startswith("Jig")
    pop = search("Chinese pop song", index_dir=small_index, k=2)
    assert {h["collection"] for h in pop} == {"pop909"}


def test_search_filters_and_k(small_index):
    hits = search("a tune", index_dir=small_index, k=3, filters=Filters(collection="pop909"))
    assert len(hits) == 2 and all(h["collection"] == "pop909" for h in hits)
    assert len(search("a tune", index_dir=small_index, k=100)) == N_FILES
    assert search("a tune", index_dir=small_index, filters=Filters(composer="Nobody")) == []
    with pytest.raises(BadInputError, match="-k"):
        search("a tune", index_dir=small_index, k=0)


def test_cli_build_then_search_json_keeps_paths_as_given(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    rel = corpus.name  # a relative folder, as a user types it
    code = main(["index", "build", rel, f"{rel}/missing.mid", "--out", str(tmp_path / "idx")])
    out, err = capsys.readouterr()
    assert code == 0 and out == ""
    assert "skipped" in err and "missing.mid" in err and f"{N_FILES} added" in err
    code = main(["search", "waltz in three four", "--index", str(tmp_path / "idx"), "-k", "3", "--json"])
    out, _ = capsys.readouterr()
    doc = json.loads(out)
    assert code == 0 and doc["engine"] == library.ENGINE and len(doc["results"]) == 3
    best = doc["results"][0]
    assert best["path"].startswith(f"{rel}/waltzes")
    assert {"path", "title", "collection", "score", "composer"} <= best.keys()

    # add keeps what is there; the same content again is not added twice; remove by the path as given
    shutil.copy(corpus / "jigs10.mid", tmp_path / "jig copy.mid")
    code = main(["index", "add", str(tmp_path / "jig copy.mid"), "--index", str(tmp_path / "idx")])
    assert code == 0 and "already there" in capsys.readouterr()[1]
    code = main(["index", "remove", f"{rel}/jigs10.mid", "--index", str(tmp_path / "idx")])
    assert code == 0 and "1 removed" in capsys.readouterr()[1]
    code = main(["index", "add", str(tmp_path / "jig copy.mid"), "--index", str(tmp_path / "idx")])
    assert code == 0 and "1 added" in capsys.readouterr()[1]
    items = Index.open(tmp_path / "idx").items
    assert len(items) == N_FILES
    assert str(tmp_path / "jig copy.mid") in {it["path"] for it in items}


@pytest.mark.parametrize("argv, message", [
    (["search", "   ", "--index", "{idx}"], "empty"),
    (["search", "waltz", "--index", "{tmp}/nowhere"], "no index at"),
    (["search", "waltz", "--index", "{tmp}"], "not a Pianoapp index"),
    (["index", "add", "{tmp}/none.mid", "--index", "{idx}"], "no such file"),
    (["index", "remove", "never-indexed.mid", "--index", "{idx}"], "Not in the index"),
    (["index", "build", "{tmp}/bad.mid", "--out", "{tmp}/new"], "The file could not be indexed: bad.mid"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, small_index, tmp_path, capsys):
    (tmp_path / "bad.mid").write_text("not a song")
    before = sorted(p.name for p in small_index.iterdir())
    code = main([a.format(idx=small_index, tmp=tmp_path) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("pianoapp: ") and message in lines[-1] and "Traceback" not in err
    assert sorted(p.name for p in small_index.iterdir()) == before  # nothing lost, nothing half-written


def test_long_emoji_and_foreign_queries_work(small_index):
    for text in ("waltz " * 2_000, "🎹 valse à trois temps 🎶", "华尔兹舞曲", "x" * 10_000):
        hits = search(text, index_dir=small_index, k=3)
        assert len(hits) == 3 and all(-1.0 <= h["score"] <= 1.0 + WORD_BONUS for h in hits)
    assert search("waltz " * 2_000, index_dir=small_index, k=1)[0]["title"].startswith("Waltz")


def test_an_outdated_index_is_refused_in_a_sentence_and_kept(small_index, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(small_index, old)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "space": "some-older-encoder"}))
    with pytest.raises(BadInputError, match="rebuild it"):
        search("waltz", index_dir=old)
    (old / "manifest.json").write_text(json.dumps({**manifest, "version": 0}))
    with pytest.raises(BadInputError, match="older version"):
        library.add_to_index([small_index], old)
    assert json.loads((old / "manifest.json").read_text())["version"] == 0  # untouched


def test_uploads_join_the_user_index_and_survive_a_restart(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("PIANOAPP_HOME", str(tmp_path / "home"))
    uploads = tmp_path / "gradio-tmp"
    uploads.mkdir()
    first = uploads / "my waltz (final).mid"  # an upload's name is its title, never a path in the index
    shutil.copy(corpus / "waltzes21.mid", first)
    report = library.add_uploads([first])
    assert len(report.added) == 1 and report.added[0]["title"] == "my waltz (final)"
    bad = uploads / "notes.mid"
    bad.write_text("eggs, milk")
    report = library.add_uploads([bad, corpus / "jigs12.mid", first])
    assert [it["title"] for it in report.added] == ["jigs12"] and report.duplicates
    assert report.skipped[0][0] == "notes.mid" and "not a MIDI file" in report.skipped[0][1]
    store = library.user_index_dir() / "files"
    assert sorted(p.suffix for p in store.iterdir()) == [".mid", ".mid"]
    assert all(len(p.stem) == 20 for p in store.iterdir())  # named by content hash
    library._opened.clear()  # a restart: nothing cached
    shutil.rmtree(uploads)  # Gradio's temporary copies are gone
    hits = search("a waltz", k=3, with_user_index=True, filters=Filters(collection=library.UPLOADS_COLLECTION))
    assert hits[0]["title"] == "my waltz (final)"
    assert library.locate(hits[0]["path"]).is_file()
    assert library.midi_download(hits[0]).name == "my waltz final.mid"
    with pytest.raises(BadInputError):
        library.add_uploads([bad])  # nothing readable: a sentence, and the index is untouched
    assert len(Index.open(library.user_index_dir())) == 2 and len(list(store.iterdir())) == 2


def test_demo_index_ships_and_answers(tmp_path):
    index = library.open_index(library.DEMO_INDEX_DIR)
    assert len(index) > 250 and index.space == library.SPACE
    assert all(it["path"].startswith(library.MUSIC21_PREFIX) for it in index.items)
    assert library.locate(index.items[0]["path"]).is_file()
    hits = search("Bach chorale", k=5)
    assert all(h["composer"] == "Bach" for h in hits[:3])
    # Names count: by cosine alone, Irving Berlin's "Alexander's Ragtime Band" comes first.
    assert search("piano music by Joplin", k=1)[0]["composer"] == "Joplin"
    rag, quartet = {"title": "Maple Leaf Rag", "composer": "Joplin"}, {"title": "String Quartet", "composer": "Beethoven"}
    assert word_overlaps("a ragtime by Joplin", [rag, quartet]) == [0.5, 0.0]
    # A named composer keeps other composers' title words from counting.
    assert word_overlaps("string quartet movement by Haydn", [quartet, {"title": "Op. 1 No. 1, movement 1",
                                                                       "composer": "Haydn"}]) == [0.0, 0.5]
    assert word_overlaps("string quartet", [quartet]) == [1.0]
    assert all(h["composer"] == "Haydn" for h in search("string quartet movement by Haydn", k=3))
    assert len(browse()) == len(index)


def test_console_search_prints_one_json_document():
    pianoapp = Path(sys.executable).parent / "pianoapp"
    proc = subprocess.run([pianoapp, "search", "Bach chorale", "-k", "3", "--json"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["engine"] == library.ENGINE and len(doc["results"]) == 3
    assert doc["results"][0]["path"].startswith("music21:bach/")
