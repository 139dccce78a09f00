"""Corpus loaders and piece-disjoint splits, on the real data in ../shared/data and music21's corpus."""

import collections
import re

import pretty_midi
import pytest

from pianoapp.data.corpora import (
    ASAP_VARIANT,
    COLLECTIONS,
    MUSIC21_PER_FOLDER,
    NOTTINGHAM_TYPES,
    form_of,
    load_collection,
    load_items,
)
from pianoapp.data.splits import SPLITS, split_of
from pianoapp.errors import BadInputError
from pianoapp.io.midi import piano_notes, read_midi


@pytest.fixture(scope="module")
def everything(data_dir):
    return {name: load_collection(name, data_dir) for name in COLLECTIONS}


def test_ids_unique_and_files_exist(everything):
    all_items = [item for items in everything.values() for item in items]
    assert len({item.item_id for item in all_items}) == len(all_items)
    assert all(item.path.is_file() for item in all_items)
    assert all(item.collection == name for name, items in everything.items() for item in items)


def test_pop909(everything, data_dir):
    items = everything["pop909"]
    assert len(items) == 806
    first = items[0]
    assert (first.item_id, first.title, first.composer) == ("pop909/001", "123我爱你", "新乐尘符")
    assert first.path == (data_dir / "pop909" / "001" / "001.mid").resolve()
    assert first.meta["key"] == "Gb major"  # key_audio.txt says Gb:maj
    assert abs(first.meta["tempo_bpm"] - 90.0) < 1.0  # beats every 0.667 s in beat_midi.txt
    assert collections.Counter(i.meta["metre"] for i in items).most_common(1)[0][0] == "2/4"
    assert {i.meta["metre"] for i in items} <= {"2/4", "3/4", "6/8", "9/8"}
    assert all(re.fullmatch(r"[A-G][b#]? (major|minor)", i.meta["key"]) for i in items)


def test_asap_groups_performances_and_score_by_piece(everything, data_dir):
    items = everything["asap"]
    assert len(items) == len(list((data_dir / "asap").rglob("*.mid")))  # 1,209: every score and performance
    ids = {i.item_id for i in items}
    assert {"asap/Bach/Fugue/bwv_846/Shi05M", "asap/Bach/Fugue/bwv_846/midi_score"} <= ids
    pieces = collections.defaultdict(list)
    for item in items:
        pieces[item.piece_id].append(item)
    # 216 folders, 10 of which replay another folder's piece without (or with) its repeats
    assert len(pieces) == 206
    for piece_items in pieces.values():
        kinds = collections.Counter(i.meta["kind"] for i in piece_items)
        assert kinds["score"] >= 1 and kinds["performance"] >= 1
        assert len({(i.title, i.composer) for i in piece_items}) == 1
    fugue = pieces["asap/Bach/Fugue/bwv_846"]
    assert {i.item_id for i in fugue} == {
        "asap/Bach/Fugue/bwv_846/midi_score",
        "asap/Bach/Fugue/bwv_846/Shi05M",
    }
    sonata = {i.item_id.rsplit("/", 2)[1] for i in pieces["asap/Beethoven/Piano_Sonatas/17-1"]}
    assert sonata == {"17-1", "17-1_no_repeat"}
    assert (
        fugue[0].title == "Fugue BWV 846"
        and fugue[0].meta["form"] == "fugue"
        and fugue[0].meta["style"] == "Baroque"
    )
    etude = next(i for i in items if i.item_id.startswith("asap/Chopin/Etudes_op_10/1/"))
    assert etude.title == "Etudes Op. 10 No. 1" and etude.meta["form"] == "étude"
    assert pieces["asap/Beethoven/Piano_Sonatas/17-1"][0].title == "Piano Sonata 17, movement 1"


@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature")
def test_nottingham_tune_types_and_metres(everything, data_dir):
    items = everything["nottingham"]
    assert len(items) == 765
    assert {i.meta["form"] for i in items} == {form for form, _ in NOTTINGHAM_TYPES.values()}
    waltz = next(i for i in items if i.item_id == "nottingham/waltzes10")
    assert waltz.title == "Waltz 10" and waltz.meta["metre"] == "3/4"
    assert next(i for i in items if i.item_id == "nottingham/reelsa-c13").title == "Reel 13 (A–C)"
    # The metre a tune type implies is the one its files are written in.
    for form in ("waltz", "jig", "hornpipe", "slip jig"):
        for item in [i for i in items if i.meta["form"] == form][:3]:
            signature = pretty_midi.PrettyMIDI(str(item.path)).time_signature_changes[0]
            assert f"{signature.numerator}/{signature.denominator}" == item.meta["metre"], item.item_id


def test_music21_demo_collection_is_balanced_and_readable(everything):
    items = everything["music21"]
    folders = collections.Counter(i.item_id.split("/")[1] for i in items)
    assert len(items) >= 250 and max(folders.values()) <= MUSIC21_PER_FOLDER
    assert "nottingham-dataset" not in folders and "demos" not in folders  # its own collection; test files
    assert not [i for i in items if i.path.suffix == ".rntxt"]
    composers = {i.composer for i in items}
    assert {"Bach", "Beethoven", "Mozart", "Haydn", "Joplin", "Palestrina", "Monteverdi"} <= composers
    by_id = {i.item_id: i for i in items}
    chorale = by_id["music21/bach/bwv1.6"]
    assert (
        chorale.meta["form"] == "chorale"
        and chorale.meta["style"] == "Baroque"
        and chorale.title == "BWV 1.6"
    )
    rag = by_id["music21/joplin/maple_leaf_rag"]
    assert rag.meta["form"] == "rag" and rag.meta["metre"] == "2/4"
    for item in (chorale, rag):
        assert len(piano_notes(read_midi(item.path, max_seconds=float("inf")))) > 100


def test_form_of():
    assert form_of("Transcendental_Etudes") == "étude"
    assert form_of("The Cup of Tea – Reel") == "reel"
    assert form_of("Slip jig 3") == "slip jig"
    assert form_of("Alexanders Ragtime Band") == "rag"
    assert form_of("Fragment") == ""


def test_split_is_a_stable_function_of_the_piece():
    # Golden values: a change here would silently move pieces between train and test.
    golden = {
        "pop909/001": "train",
        "pop909/002": "val",
        "pop909/027": "test",
        "asap/Bach/Fugue/bwv_846": "train",
    }
    assert {p: split_of(p) for p in golden} == golden


def test_splits_are_piece_disjoint_and_roughly_80_10_10(everything, data_dir):
    all_items = [item for items in everything.values() for item in items]
    per_split = {split: load_items(data_dir=data_dir, split=split) for split in SPLITS}
    assert sum(len(v) for v in per_split.values()) == len(all_items)
    pieces = {split: {i.piece_id for i in items} for split, items in per_split.items()}
    assert not (pieces["train"] & pieces["val"]) and not (pieces["train"] & pieces["test"])
    assert not (pieces["val"] & pieces["test"])
    # Independently of piece_id: all files in one ASAP piece folder (repeat variants joined) share a split.
    asap_root = (data_dir / "asap").resolve()
    by_folder = collections.defaultdict(set)
    for item in everything["asap"]:
        folder = "/".join(
            ASAP_VARIANT.sub("", part) for part in item.path.parent.relative_to(asap_root).parts
        )
        by_folder[folder].add(split_of(item.piece_id))
    assert all(len(splits) == 1 for splits in by_folder.values())
    total = sum(len(p) for p in pieces.values())
    assert abs(len(pieces["train"]) / total - 0.8) < 0.03
    assert abs(len(pieces["val"]) / total - 0.1) < 0.02 and abs(len(pieces["test"]) / total - 0.1) < 0.02


def test_bad_requests_are_clear_errors(tmp_path, data_dir):
    with pytest.raises(BadInputError, match="Unknown collection 'maestro'"):
        load_collection("maestro", data_dir)
    with pytest.raises(BadInputError, match="pop909 data is not at"):
        load_collection("pop909", tmp_path)
    with pytest.raises(BadInputError, match="Unknown split 'dev'"):
        load_items(("nottingham",), data_dir, split="dev")
    assert load_items("nottingham", data_dir) == load_collection("nottingham", data_dir)
