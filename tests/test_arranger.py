"""The style-reference arranger on its tiny config (a small Q-Former on the shipped lm-small and
matcher): prefix shapes, what trains and what a checkpoint holds, a few training steps, generation
that follows the lead sheet, the service's answers to bad input, and the CLI."""

import numpy as np
import pretty_midi
import pytest
import torch

from pianoapp import constants
from pianoapp.cli import main
from pianoapp.data.arrangement import ArrangementCodec, ArrangementExamples, ArrangementPairs, load_songs
from pianoapp.errors import BadInputError, SilentAudioError, TooLongError
from pianoapp.io.audio import write_audio
from pianoapp.io.leadsheet import read_leadsheet
from pianoapp.io.midi import notes_to_midi, write_midi
from pianoapp.io.render import render
from pianoapp.models import registry
from pianoapp.models.arranger import REFERENCE_SAMPLES, Arranger, reference_clip
from pianoapp.models.checkpoint import save_model
from pianoapp.services.arrange import arrange, arrange_sheet, load_leadsheet, load_reference, reference_style

BASES = ("lm-small", "matcher")
pytestmark = pytest.mark.skipif(
    not all((constants.MODELS_DIR / name / "model.safetensors").is_file() for name in BASES),
    reason="the arranger builds on the shipped models/lm-small and models/matcher",
)
CODEC = ArrangementCodec()
FOLK = constants.ASSETS_DIR / "folk_lead_sheet.mid"


def tiny(seed: int = 0) -> Arranger:
    torch.manual_seed(seed)
    return registry.build_model("arranger-tiny", vocab_size=CODEC.tokenizer.vocab_size).eval()


@pytest.fixture(scope="module")
def arranger() -> Arranger:
    return tiny()


@pytest.fixture(scope="module")
def model_dir(arranger, tmp_path_factory):
    folder = tmp_path_factory.mktemp("arranger-tiny")
    save_model(arranger, folder, config=arranger.config, extra={"tokenizer": CODEC.tokenizer.to_dict()})
    return folder


def test_prefix_and_logit_shapes(arranger):
    k, d = arranger.config.qformer.n_queries, arranger.lm.config.d_model
    audio = np.random.default_rng(0).normal(0, 0.1, (2, REFERENCE_SAMPLES)).astype(np.float32)
    audio = torch.from_numpy(audio)
    with torch.no_grad():
        frames = arranger.frames(audio)
        assert frames.shape[0] == 2 and frames.shape[2] == arranger.audio.config.d_model
        assert arranger.prefix(frames).shape == (2, k, d)
        assert arranger.prefix(None, batch=3).shape == (3, k, d)  # no reference: the null prefix
        dropped = arranger.prefix(frames, drop=torch.tensor([True, False]))
        assert torch.equal(dropped[0], arranger.null_prefix)
        assert not torch.equal(dropped[1], arranger.null_prefix)
        ids = torch.tensor([CODEC.encode(read_leadsheet(FOLK, bars=1), [])[0]])
        assert arranger(ids, frames[:1]).shape == (1, ids.shape[1], CODEC.tokenizer.vocab_size)


def test_only_adapters_new_rows_and_qformer_train_and_are_saved(arranger, model_dir):
    trained = {name for name, p in arranger.named_parameters() if p.requires_grad}
    frozen = {name for name, p in arranger.named_parameters() if not p.requires_grad}
    assert trained and all(n.startswith(("qformer.", "prefix_proj.", "null_prefix")) or ".lora_" in n
                           or n == "lm.tok_emb.extra" for n in trained)
    assert any(".lora_A." in n for n in trained) and any(".q_proj.lora_B." in n for n in trained)
    assert all(n.startswith(("audio.", "lm.")) for n in frozen)  # the whole LM and audio encoder
    assert "lm.tok_emb.base" in frozen and "lm.blocks.0.attn.q_proj.base_layer.weight" in frozen
    statistics = {"qformer.audio_norm.running_mean", "qformer.audio_norm.running_var",
                  "qformer.audio_norm.num_batches_tracked"}  # the frames' running statistics are saved too
    assert set(arranger.state_dict()) == trained | statistics
    older = {k: v for k, v in arranger.state_dict().items() if k not in statistics}  # from before them
    tiny(seed=1).load_state_dict(older)
    assert arranger.lm.tok_emb.weight.shape[0] == CODEC.tokenizer.vocab_size
    size = (model_dir / "model.safetensors").stat().st_size
    assert size < 4 * arranger.num_params(trainable=True) < 50e6  # fp16 trained parts only, no frozen 25M


def test_a_few_steps_lower_the_loss_and_merging_keeps_the_outputs(data_dir):
    from pianoapp.models.registry import train_defaults
    from pianoapp.train.arranger import ArrangerRecipe, ArrangerTrainConfig

    config = ArrangerTrainConfig(**{**train_defaults("arranger-tiny"), "context_len": 128})
    recipe = ArrangerRecipe("arranger-tiny", config, data_dir=data_dir)
    examples = ArrangementExamples(ArrangementPairs(load_songs("train", data_dir=data_dir, max_songs=2)),
                                   recipe.codec, context_len=128, seed=0)
    items = [examples[i] for i in range(2)]
    audio = np.random.default_rng(1).normal(0, 0.1, (2, REFERENCE_SAMPLES)).astype(np.float32)
    torch.manual_seed(1)
    model = recipe.build_model().train()
    t, table = recipe.codec.tokenizer, model.lm.tok_emb.weight.detach()
    note = {p: table[t.note_offset + (p - t.config.pitch_min) * t.config.velocity_bins + 6] for p in (60, 66)}
    root = table[t.token_to_id["root:C"]]
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(root, note[60], dim=0) > cosine(root, note[66], dim=0) + 0.2  # root:C starts near C, not F#
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for stage in (1, 2):
        batch = {"ids": torch.stack([it["ids"] for it in items]),
                 "target": torch.stack([it["target"] for it in items]),
                 "audio": torch.from_numpy(audio), "stage": torch.tensor([stage, stage]),
                 "drop": torch.tensor([False, False])}
        losses = []
        for _ in range(6):
            loss, count = recipe.loss(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        assert count == 2 and losses[-1] < 0.8 * losses[0], (stage, losses)
    model.eval()
    assert any(float(p.detach().abs().max()) > 0 for n, p in model.named_parameters() if ".lora_B." in n)
    ids = batch["ids"][:1, :40]
    with torch.no_grad():
        frames = model.frames(batch["audio"][:1])
        merged, _ = model.merged_lm()(ids, prefix_embeds=model.prefix(frames))
        assert torch.allclose(merged[:, model.n_prefix:], model(ids, frames), atol=1e-3)


def test_generation_follows_the_lead_sheet_and_the_seed(arranger):
    sheet = read_leadsheet(FOLK, bars=1)
    first = arrange_sheet(arranger, CODEC, sheet, None, style=None, seed=3)
    assert rows(first) == rows(arrange_sheet(arranger, CODEC, sheet, None, style=None, seed=3))
    assert all(0 <= n.start < sheet.end_s and n.end <= sheet.end_s for n in first)


def test_an_infinite_chord_bias_writes_only_chord_tones(arranger):
    """Even an untrained model plays only the tones of the chord sounding where each note starts
    (a note whose onset lands past a chord change is chosen again for the new chord) and lets go of
    a note when a chord it does not belong to starts."""
    sheet = read_leadsheet(FOLK, bars=4)
    assert len({c.symbol for c in sheet.chords}) > 1
    free = arrange_sheet(arranger, CODEC, sheet, None, style=None, seed=5, chord_bias=0.0)
    bound = arrange_sheet(arranger, CODEC, sheet, None, style=None, seed=5, chord_bias=float("inf"))
    assert len(bound) > 10

    def outside(notes):
        return [n for n in notes if (c := sheet.chord_at(n.start)) and n.pitch % 12 not in c.pitch_classes]

    assert len(outside(free)) > len(free) // 3 and not outside(bound)
    for n in bound:
        assert not any(n.start < c.start < n.end and n.pitch % 12 not in c.pitch_classes for c in sheet.chords)


def test_an_infinite_melody_bias_keeps_the_part_under_the_tune(arranger):
    sheet = read_leadsheet(FOLK, bars=4)

    def above(notes):
        return [n for n in notes if (p := sheet.melody_at(n.start)) is not None and n.pitch >= p]

    free = arrange_sheet(arranger, CODEC, sheet, None, style=None, seed=5, chord_bias=0.0, melody_bias=0.0)
    under = arrange_sheet(arranger, CODEC, sheet, None, style=None, seed=5, chord_bias=0.0,
                          melody_bias=float("inf"))
    assert len(above(free)) > 5 and len(under) > 10 and not above(under)


def test_notes_are_released_where_a_chord_they_clash_with_starts():
    from pianoapp.io.leadsheet import Chord
    from pianoapp.services.arrange import released_at_chord_changes

    chords = [Chord(0.0, 2.0, 2, "maj"), Chord(2.0, 4.0, 9, "maj"), Chord(4.0, 6.0, 2, "maj")]  # D A D
    notes = [pretty_midi.Note(80, 50, 0.0, 5.0),  # D: released when A comes in
             pretty_midi.Note(80, 57, 0.0, 5.0),  # A: in all three chords, held
             pretty_midi.Note(80, 61, 2.5, 5.0)]  # C#: in A, released when D returns
    assert [(n.pitch, n.start, n.end) for n in released_at_chord_changes(notes, chords)] == [
        (50, 0.0, 2.0), (57, 0.0, 5.0), (61, 2.5, 4.0)]


def test_bar_prompt_leaves_out_a_chord_that_only_grazes_the_bar():
    """A chord starting 20 ms before the barline belongs to the next bar, however long it lasts."""
    from pianoapp.io.leadsheet import Chord, LeadSheet

    chords = [Chord(0.0, 1.98, 0, "maj"), Chord(1.98, 4.0, 7, "maj")]
    sheet = LeadSheet(melody=[], chords=chords, downbeats=np.array([0.0, 2.0]), end_s=4.0, tempo_bpm=120.0,
                      metre="4/4", key="C major")
    vocab = CODEC.tokenizer.vocab
    roots = [[vocab[i] for i in CODEC.bar_prompt(sheet, k) if vocab[i].startswith("root:")] for k in range(2)]
    assert roots == [["root:C"], ["root:G"]]


def rows(notes: list[pretty_midi.Note]) -> list[tuple]:
    return [(n.pitch, n.velocity, n.start, n.end) for n in notes]


def test_service_arranges_loaded_checkpoint_with_a_reference(model_dir, assets_dir):
    result = arrange(FOLK, assets_dir / "mozart_k545_opening.flac", bars=2, seed=0, model_dir=model_dir)
    assert result.sheet.n_bars == 2 and result.reference == "mozart_k545_opening.flac"
    pm = pretty_midi.PrettyMIDI(str(result.saved.midi_path))
    assert [inst.name for inst in pm.instruments] == ["melody", "accompaniment"]
    melody = [(n.pitch, round(n.start, 3)) for n in pm.instruments[0].notes]
    assert melody == [(n.pitch, round(n.start, 3)) for n in result.sheet.melody]  # the tune as written
    assert result.saved.wav_path.stat().st_size > 0
    assert len(result.figure().data) >= 1
    assert any(n.startswith("Heard in mozart_k545_opening.flac: ") and "notes a second" in n for n in result.notices)


def test_the_style_is_read_from_what_the_reference_plays():
    """Rendered and transcribed as the app reads a recording: block chords low down against a
    single line up high."""
    def clip(notes):
        return reference_clip(render(notes_to_midi({"piano": notes}, tempo=120.0), sr=constants.SAMPLE_RATE))

    chords = [pretty_midi.Note(90, p, b * 0.5, b * 0.5 + 0.45) for b in range(16) for p in (43, 47, 50)]
    line = [pretty_midi.Note(90, 76 + (k % 3) * 2, k * 1.0, k * 1.0 + 0.8) for k in range(8)]
    busy, sparse = reference_style(clip(chords)), reference_style(clip(line))
    assert busy.density > 2 * sparse.density and busy.poly > 2 > sparse.poly
    assert busy.register < 55 and sparse.register > 74


def one_sentence(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text and text.endswith(".") and len(text) < 300
    return text


def test_bad_lead_sheets_say_what_is_wrong_in_one_sentence(tmp_path):
    with pytest.raises(BadInputError) as err:
        load_leadsheet(FOLK, chords_text="D Qmaj9# | G")
    assert "Qmaj9#" in one_sentence(err.value)
    with pytest.raises(TooLongError) as err:
        load_leadsheet(FOLK, bars=40)
    assert "32" in one_sentence(err.value)
    long = [pretty_midi.Note(80, 60 + k % 12, k * 2.0, k * 2.0 + 1.5) for k in range(200)]
    write_midi(notes_to_midi({"melody": long}, tempo=120.0), tmp_path / "long.mid")
    with pytest.raises(TooLongError) as err:
        load_leadsheet(tmp_path / "long.mid")
    assert "200 bars" in one_sentence(err.value)
    sheet, notices = load_leadsheet(tmp_path / "long.mid", bars=8)  # no chords in it: inferred, and said
    assert sheet.n_bars == 8 and sheet.chords
    assert any("inferred" in n for n in notices) and any("first 8 of" in n for n in notices)


def speech_like(seconds: float = 10.0, sr: int = constants.SAMPLE_RATE) -> np.ndarray:
    """A voice-like sound: harmonics of a gliding pitch, in syllables, with breath noise between."""
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t) + 25 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(h * phase) / h for h in range(1, 25))
    syllables = np.clip(np.sin(np.pi * (t * 4 % 1)), 0, 1) ** 0.7
    breath = rng.standard_normal(t.size) * (syllables < 0.3)
    return (0.1 * (voiced * syllables + 0.3 * breath)).astype(np.float32)


def test_bad_references_say_what_is_wrong_in_one_sentence(tmp_path, assets_dir):
    write_audio(tmp_path / "silence.wav", np.zeros(constants.SAMPLE_RATE * 5, np.float32))
    with pytest.raises(SilentAudioError) as err:
        load_reference(tmp_path / "silence.wav")
    assert "silent" in one_sentence(err.value)
    write_audio(tmp_path / "talk.wav", speech_like())
    with pytest.raises(BadInputError) as err:
        load_reference(tmp_path / "talk.wav")
    assert "speech" in one_sentence(err.value)
    clip, notices = load_reference(assets_dir / "joplin_maple_leaf_rag_opening.mid")  # scores are rendered
    assert clip.shape == (REFERENCE_SAMPLES,) and notices


def test_cli_writes_a_two_track_midi(model_dir, tmp_path, capsys):
    out = tmp_path / "arranged.mid"
    code = main(["arrange", str(FOLK), "--bars", "1", "--seed", "1", "--chords", "D | G", "--out", str(out),
                 "--model", str(model_dir)])
    assert code == 0 and capsys.readouterr().out == ""
    pm = pretty_midi.PrettyMIDI(str(out))
    assert [inst.name for inst in pm.instruments] == ["melody", "accompaniment"]
    code = main(["arrange", str(FOLK), "--chords", "D H7", "--out", str(out), "--model", str(model_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "H7" in err
