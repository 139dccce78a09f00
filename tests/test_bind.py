"""The text–audio–MIDI search model: item embeddings, what trains, a few real steps, the bind engine on real files."""

import numpy as np
import pretty_midi
import pytest
import torch
from torch.utils.data import default_collate

from pianoapp import constants
from pianoapp.data.attributes import note_attributes
from pianoapp.data.captions import captions
from pianoapp.data.corpora import Item
from pianoapp.data.segments import note_rows
from pianoapp.descriptors import PIECE_DIM, piece_descriptors
from pianoapp.errors import BadInputError
from pianoapp.io.midi import notes_to_midi, piano_notes, read_midi
from pianoapp.io.render import render
from pianoapp.models.bind import matcher_id
from pianoapp.models.checkpoint import load_model, save_model
from pianoapp.models.registry import build_model
from pianoapp.services import library
from pianoapp.services.match import audio_windows, matcher_model, note_windows
from pianoapp.services.search import search
from pianoapp.train.bind import CaptionedRuns, ItemFeatures, trimodal_loss
from pianoapp.train.trainer import TrainConfig, make_optimizer

OPENING_S = 20.0
OWN_PARAMS = ("text.proj.", "audio_adapter.", "midi_adapter.", "descriptors.", "logit_scale")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("bind-tiny")


@pytest.fixture(scope="module")
def asset_features(assets_dir) -> list[ItemFeatures]:
    """The demo MIDI files as the recipe sees corpus items: their opening rendered, both modalities
    cut into windows and embedded by the shipped matcher."""
    matcher = matcher_model()
    out = []
    for path in sorted(assets_dir.glob("*.mid")):
        notes = piano_notes(read_midi(path))
        opening = [n for n in notes if n.start < OPENING_S]
        audio = render(notes_to_midi([pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in opening]))
        a, a_start = audio_windows(audio[: round(OPENING_S * constants.SAMPLE_RATE)], matcher)
        m, m_start = note_windows(note_rows(opening), matcher)
        item = Item(path.stem, path, "assets", path.stem, path.stem.replace("_", " "), "", {})
        attributes = {k: v.item() if isinstance(v, np.generic) else v for k, v in note_attributes(notes).items()}
        out.append(ItemFeatures(item, a.astype(np.float16), a_start, m.astype(np.float16), m_start, attributes))
    return out


def test_item_embedding_is_the_normalised_mean_of_its_audio_and_midi_embeddings(tiny, asset_features):
    f = asset_features[0]
    descriptors = piece_descriptors(f.attributes)
    both = tiny.encode_item(f.audio, f.midi, descriptors)
    audio_only = tiny.encode_item(f.audio, f.midi[:0], descriptors)
    midi_only = tiny.encode_item(f.audio[:0], f.midi, descriptors)
    expected = (audio_only + midi_only) / np.linalg.norm(audio_only + midi_only)
    np.testing.assert_allclose(both, expected, atol=1e-5)
    np.testing.assert_allclose([np.linalg.norm(v) for v in (both, audio_only, midi_only)], 1.0, atol=1e-5)
    # A modality's embedding is the mean of its adapted windows, unit-normalised first.
    with torch.no_grad():
        windows = torch.nn.functional.normalize(torch.from_numpy(f.audio.astype(np.float32)), dim=-1)
        mean = tiny.audio_adapter(windows).mean(0)
    np.testing.assert_allclose(audio_only, (mean / mean.norm()).numpy(), atol=1e-5)
    assert not np.allclose(audio_only, midi_only, atol=1e-2)  # two towers, two views
    with pytest.raises(ValueError):
        tiny.encode_item(f.audio[:0], f.midi[:0], descriptors)


def test_piece_descriptors_carry_the_key_and_tempo_of_real_files(asset_features):
    for f in asset_features:
        d = piece_descriptors(f.attributes)
        assert d.shape == (PIECE_DIM,) and np.isfinite(d).all() and np.abs(d).max() <= 3
        assert d[:24].sum() == 1 and (np.argmax(d[:24]) >= 12) == f.attributes["key"].endswith("minor")
    faster = {**asset_features[0].attributes, "tempo_bpm": 2 * asset_features[0].attributes["tempo_bpm"]}
    assert np.isclose(piece_descriptors(faster)[25] - piece_descriptors(asset_features[0].attributes)[25], 1.0)


def test_only_lora_projection_adapters_and_temperature_train_and_ship(tiny, tmp_path):
    trainable = {name for name, p in tiny.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(OWN_PARAMS) for n in trainable)
    assert any("lora_" in n for n in trainable) and {"logit_scale", "text.proj.weight"} <= trainable
    frozen = sum(p.numel() for p in tiny.parameters() if not p.requires_grad)
    assert frozen > 20_000_000  # MiniLM stays as it came
    assert set(tiny.state_dict()) == trainable  # the checkpoint holds only what trains
    no_lora = build_model("bind-tiny", lora_rank=0, adapter_hidden=0, descriptor_hidden=0)
    assert {n for n, p in no_lora.named_parameters() if p.requires_grad} == {"logit_scale", "text.proj.weight",
                                                                               "text.proj.bias"}

    out = save_model(tiny, tmp_path / "bind", config=tiny.config, extra={"matcher": matcher_id()})
    assert (out / "model.safetensors").stat().st_size < 1_000_000
    loaded = load_model(out, device="cpu")  # composed with the frozen MiniLM again
    texts = ["a slow, sad waltz in a minor key", "a fast jig"]
    np.testing.assert_allclose(loaded.encode_texts(texts), tiny.eval().encode_texts(texts), atol=2e-3)


def test_a_few_steps_on_real_features_lower_the_loss(asset_features):
    torch.manual_seed(0)
    model = build_model("bind-tiny").train()
    runs = CaptionedRuns(asset_features, seed=0, batch_size=len(asset_features), min_windows=8, max_windows=16)
    batch = default_collate([runs[i] for i in range(len(asset_features))])
    assert len({f.item.piece_id for f in asset_features}) == len(batch["caption"])  # distinct pieces per batch
    assert batch["audio"].shape == (len(asset_features), 16, 256) and batch["audio_mask"].sum(1).min() >= 1
    optimizer = make_optimizer(model, TrainConfig(lr=3e-3, weight_decay=0.0), fused=False)

    def loss() -> torch.Tensor:
        tokens = model.tokenize(batch["caption"])
        return trimodal_loss(model(tokens["input_ids"], tokens["attention_mask"], batch["audio"],
                                   batch["audio_mask"], batch["midi"], batch["midi_mask"], batch["descriptors"]))

    losses = []
    for _ in range(12):
        value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(value.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    # The descriptor MLP started at zero and learned: a piece in another key now embeds elsewhere.
    f = asset_features[0]
    other_key = {**f.attributes, "key": "F# minor" if f.attributes["key"] != "F# minor" else "C major"}
    model.eval()
    moved = [model.encode_item(f.audio[:0], f.midi, piece_descriptors(a)) for a in (f.attributes, other_key)]
    assert float(moved[0] @ moved[1]) < 0.999


@pytest.fixture(scope="module")
def bind_index(assets_dir, tmp_path_factory):
    if library.ENGINE != "bind":
        pytest.skip("no trained search model in models/bind: the bind engine is off")
    out = tmp_path_factory.mktemp("bind") / "idx"
    report = library.build_index(sorted(assets_dir.glob("*.mid")), out)
    assert not report.skipped
    return out


def test_bind_index_of_real_files_finds_an_item_by_its_caption(bind_index):
    from pianoapp.index import Index

    index = Index.open(bind_index)
    assert index.space == library.SPACE and index.dim == 256 + 384 and index.windows is not None
    chorale = next(it for it in index.items if "bach chorale" in it["title"])
    item = Item(chorale["id"], chorale["path"], chorale["collection"], chorale["id"], chorale["title"], "", {})
    text = captions(item, chorale["attributes"], n=1, seed=0, split="eval")[0]
    hits = search(text, index_dir=bind_index, k=3)
    assert chorale["id"] in [h["id"] for h in hits], (text, hits)


def test_a_bind_index_from_before_the_text_half_gains_it_and_keeps_it(bind_index, tmp_path):
    import shutil

    from pianoapp.index import Index

    old = tmp_path / "old"
    shutil.copytree(bind_index, old)
    index = Index.open(old)
    current = index.embeddings.copy()
    index.reembed(library._BIND_ONLY_SPACE, current[:, :256] * np.sqrt(1 + library.TEXT_WEIGHT))  # as before
    index.save()
    opened = library.open_index(old)
    assert opened.space == library.SPACE
    np.testing.assert_allclose(opened.embeddings, current, atol=1e-5)  # what a rebuild gives
    library.remove_from_index([opened.items[0]["id"]], old)  # a write saves it upgraded
    assert Index.open(old).space == library.SPACE and len(Index.open(old)) == len(current) - 1


def test_bad_queries_give_a_sentence_or_valid_results(bind_index):
    with pytest.raises(BadInputError, match="empty"):
        search("   ", index_dir=bind_index)
    for text in ("x" * 10_000, "🎹🎶 🎼", "一首悲伤的钢琴曲"):
        hits = search(text, index_dir=bind_index, k=3)
        assert len(hits) == 3 and all(np.isfinite(h["score"]) for h in hits)
