"""Attributes computed from real notes, and the seeded caption generator built on them."""

import re

import pretty_midi
import pytest

from pianoapp.data.attributes import note_attributes
from pianoapp.data.captions import TEMPLATES, WORDINGS, captions, describe, template_fields
from pianoapp.data.corpora import load_collection
from pianoapp.errors import EmptyMidiError
from pianoapp.io.midi import piano_notes, read_midi


def notes_of(path):
    return piano_notes(read_midi(path, max_seconds=float("inf")))


@pytest.fixture(scope="module")
def items(data_dir):
    wanted = {
        "pop909": ["pop909/001", "pop909/758"],
        "asap": [
            "asap/Chopin/Ballades/1/midi_score",
            "asap/Bach/Fugue/bwv_846/Shi05M",
            "asap/Bach/Fugue/bwv_846/midi_score",
        ],
        "nottingham": ["nottingham/waltzes10", "nottingham/jigs61"],
    }
    by_id = {}
    for collection, ids in wanted.items():
        loaded = {item.item_id: item for item in load_collection(collection, data_dir)}
        by_id.update({item_id: loaded[item_id] for item_id in ids})
    return by_id


@pytest.fixture(scope="module")
def attrs(items):
    return {item_id: note_attributes(notes_of(item.path)) for item_id, item in items.items()}


def test_key_and_mode(attrs, items):
    assert attrs["asap/Chopin/Ballades/1/midi_score"]["key"] == "G minor"
    assert attrs["asap/Chopin/Ballades/1/midi_score"]["mode"] == "minor"
    assert attrs["asap/Bach/Fugue/bwv_846/midi_score"]["key"] == "C major"
    assert attrs["pop909/758"]["mode"] == "minor" and items["pop909/758"].meta["key"] == "F minor"


def test_texture_register_dynamics(attrs, data_dir):
    melody = note_attributes(notes_of(data_dir / "nottingham" / "melody" / "waltzes10.mid"))
    assert melody["texture"] == "monophonic" and melody["polyphony"] < 1.2
    assert melody["register"] == "high" and melody["pitch_range"] < 24
    lead_sheet = attrs["nottingham/waltzes10"]
    assert lead_sheet["texture"] != "monophonic" and lead_sheet["mean_pitch"] < melody["mean_pitch"]
    assert lead_sheet["dynamics"] == "unmarked"  # every note at velocity 90 says nothing about loudness
    assert attrs["asap/Bach/Fugue/bwv_846/Shi05M"]["dynamics"] in ("soft", "medium", "loud")
    assert (
        attrs["asap/Bach/Fugue/bwv_846/midi_score"]["texture"] == "polyphonic"
    )  # a fugue: voices struck apart


def test_chorale_is_homophonic():
    from music21 import corpus  # a Bach chorale: four voices struck together

    chorale = note_attributes(notes_of(corpus.getWork("bach/bwv66.6")))
    assert chorale["texture"] == "homophonic"
    assert chorale["key"] == "F# minor"


@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature")
def test_tempo_estimate_matches_the_file(attrs, items):
    waltz = items["nottingham/waltzes10"]
    file_bpm = pretty_midi.PrettyMIDI(str(waltz.path)).get_tempo_changes()[1][0]
    assert attrs["nottingham/waltzes10"]["tempo_bpm"] == pytest.approx(file_bpm, rel=0.04)
    pop = attrs["pop909/001"]["tempo_bpm"]
    annotated = items["pop909/001"].meta["tempo_bpm"]  # from beat_midi.txt
    assert min(abs(pop / (annotated * m) - 1) for m in (0.5, 1, 2)) < 0.04


def test_other_attributes(attrs):
    a = attrs["asap/Chopin/Ballades/1/midi_score"]
    assert a["duration_s"] > 400 and a["n_notes"] > 3000
    assert a["density"] == pytest.approx(a["n_notes"] / a["duration_s"], rel=0.05)
    assert a["density_word"] == "dense" and attrs["nottingham/waltzes10"]["density_word"] != "dense"
    assert a["pitch_min"] < a["mean_pitch"] < a["pitch_max"]
    with pytest.raises(EmptyMidiError, match="no notes"):
        note_attributes([])


def test_captions_are_seeded(items, attrs):
    item, a = items["asap/Chopin/Ballades/1/midi_score"], attrs["asap/Chopin/Ballades/1/midi_score"]
    first = captions(item, a, n=5, seed=3)
    assert first == captions(item, a, n=5, seed=3)
    assert first != captions(item, a, n=5, seed=4)
    assert len(first) == 5 and len(set(first)) == 5
    assert len(captions(item, a, n=30, seed=0)) == 30  # more than there are templates: wordings vary
    assert captions(item, a, seed=0, split="eval") != captions(item, a, seed=0, split="train")


def test_train_and_eval_pools_are_disjoint():
    assert len(TEMPLATES["train"]) >= 10 and len(TEMPLATES["eval"]) >= 10
    assert not set(TEMPLATES["train"]) & set(TEMPLATES["eval"])
    for concept, (train, evaluation) in WORDINGS.items():
        assert train and evaluation and not set(train) & set(evaluation), concept

    # Templates with the same slots could differ by punctuation only: compare their words.
    def shape(template):
        return tuple(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", "", template)))

    assert not {shape(t) for t in TEMPLATES["train"]} & {shape(t) for t in TEMPLATES["eval"]}


def test_eval_captions_use_no_training_template(items, attrs):
    def pattern(template):
        parts = re.split(r"\{\w+\}", template)
        return re.compile("(?i)" + ".+".join(re.escape(p) for p in parts) + "$")

    train_patterns = [pattern(t) for t in TEMPLATES["train"]]
    for item_id, item in items.items():
        for caption in captions(item, attrs[item_id], n=12, seed=1, split="eval"):
            assert not any(p.match(caption) for p in train_patterns), caption


def test_captions_describe_the_music_and_never_leak_paths(items, attrs):
    for item_id, item in items.items():
        texts = [c for seed in range(4) for c in captions(item, attrs[item_id], n=6, seed=seed)]
        joined = " ".join(texts).lower()
        for leak in (
            str(item.path),
            item.path.name,
            item.path.stem,
            item.item_id,
            ".mid",
            "/" + item.collection,
        ):
            assert leak.lower() not in joined, (item_id, leak)
        assert all(not t[0].islower() and t.endswith(".") and "{" not in t for t in texts)
    pop = " ".join(captions(items["pop909/001"], attrs["pop909/001"], n=12, seed=0))
    assert "Chinese pop" in pop
    assert "Mandopop" in " ".join(
        captions(items["pop909/001"], attrs["pop909/001"], n=12, seed=0, split="eval")
    ) or ("C-pop" in " ".join(captions(items["pop909/001"], attrs["pop909/001"], n=12, seed=0, split="eval")))
    ballade = " ".join(
        captions(items["asap/Chopin/Ballades/1/midi_score"], attrs["asap/Chopin/Ballades/1/midi_score"], n=12)
    )
    assert "Romantic ballade" in ballade and "G minor" in ballade and "Chopin" in ballade
    waltz = " ".join(captions(items["nottingham/waltzes10"], attrs["nottingham/waltzes10"], n=12))
    assert "waltz" in waltz and "3/4" in waltz and "Waltz 10" not in waltz  # the title is only a file number
    minor_moods = set(
        WORDINGS["mood:minor-moderate"][0] + WORDINGS["mood:minor-slow"][0] + WORDINGS["mood:minor-fast"][0]
    )
    assert any(mood in ballade.lower() for mood in minor_moods)


def test_describe_is_plain_metadata(items, attrs):
    line = describe(items["asap/Chopin/Ballades/1/midi_score"], attrs["asap/Chopin/Ballades/1/midi_score"])
    assert line.startswith("Ballade 1; Chopin; ASAP classical piano; G minor;") and line.endswith("BPM")
    assert "Gb major" in describe(items["pop909/001"], attrs["pop909/001"])  # the annotated key wins


def test_every_template_slot_is_known():
    always = {"genre", "key", "mood", "tempo", "texture", "density", "register"}
    optional = {"by", "title", "metre", "bpm", "dynamics", "rendition"}
    for pool in TEMPLATES.values():
        assert sum(template_fields(t) <= always for t in pool) >= 5  # enough for an item we know little about
        assert all(template_fields(t) <= always | optional for t in pool)
