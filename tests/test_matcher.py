"""The audio↔MIDI matcher: model shapes and ablation switches, aligned rendered segments, audio
augmentation, the seed retrieval protocol, and a tiny training run on real pieces."""

import itertools
import json

import librosa
import numpy as np
import pretty_midi
import pytest
import torch
from torch.utils.data import default_collate

from pianoapp import cli, constants
from pianoapp.data.augment import AudioAugment, add_noise, augment_audio
from pianoapp.data.segments import (
    MAX_NOTES,
    SEGMENT_SAMPLES,
    SEGMENT_SECONDS,
    Segments,
    TrainingSegments,
    midi_inputs,
    render_pieces,
)
from pianoapp.data.sequences import load_pieces
from pianoapp.descriptors import A4_BAND_EDGES_HZ
from pianoapp.errors import BadInputError
from pianoapp.evaluate.matcher import evaluate_matcher, retrieval
from pianoapp.io.midi import notes_to_midi
from pianoapp.io.render import render
from pianoapp.models.checkpoint import load_config, load_model
from pianoapp.models.registry import build_model, get_config, list_configs
from pianoapp.train import run
from pianoapp.train.matcher import MatcherTrainConfig
from pianoapp.train.trainer import apply_overrides

SR = constants.SAMPLE_RATE
TUNE = "nottingham/ashover1.mid"  # a jig: melody over block chords


@pytest.fixture(scope="module")
def segment_batch():
    """Two real 4 s segments: a rendered C major arpeggio and a low A minor chord."""
    examples = []
    for pitches in ([60, 64, 67, 72], [45, 48, 52]):
        notes = np.array([[0.5 * i, 0.5 * i + 1.5, p, 80] for i, p in enumerate(pitches)], dtype=np.float64)
        played = [pretty_midi.Note(80, int(p), s, e) for s, e, p, _ in notes]
        audio = np.zeros(SEGMENT_SAMPLES, np.float32)
        rendered = render(notes_to_midi(played))[:SEGMENT_SAMPLES]
        audio[: len(rendered)] = rendered
        examples.append({"audio": audio, "midi": midi_inputs(notes, 0.0)})
    return default_collate(examples)


@pytest.mark.parametrize("name", list_configs("matcher"))
def test_every_config_builds_and_embeds_into_256_dimensions(name, segment_batch):
    if name.endswith("base"):  # the seed's size: built without memory, checked by arithmetic
        with torch.device("meta"):
            model = build_model(name)
        assert 70e6 < model.num_params() < 80e6
        assert model.audio_head.net[-1].out_features == model.midi_head.net[-1].out_features == 256
        return
    model = build_model(name).eval()
    limits = {"matcher-tiny": (1e5, 1e6), "matcher-small": (3e6, 6e6)}[name]
    assert limits[0] < model.num_params() < limits[1]
    with torch.no_grad():
        out = model(segment_batch["audio"], segment_batch["midi"], hidden=True)
    assert out.audio.shape == out.midi.shape == (2, 256)
    config = model.config
    assert len(out.audio_hidden) == config.audio.n_layers and len(out.midi_hidden) == config.midi.n_layers
    assert all(h.shape == (2, config.audio.d_model) for h in out.audio_hidden)
    assert all(h.shape == (2, config.midi.d_model) for h in out.midi_hidden)
    assert torch.isfinite(out.audio).all() and torch.isfinite(out.midi).all()
    assert model(segment_batch["audio"], segment_batch["midi"]).audio_hidden is None


def test_descriptor_switches_add_the_injections_and_they_matter(segment_batch):
    arms = {(a4, d4): build_model("matcher-tiny", use_a4=a4, use_d4=d4) for a4 in (False, True) for d4 in (False, True)}
    d = get_config("matcher-tiny").audio.d_model
    assert arms[False, False].audio_encoder.inject_a4 is None and arms[False, False].midi_encoder.inject_d4 is None
    assert arms[True, False].num_params() - arms[False, False].num_params() == (d + 16) * d + d
    assert arms[False, True].num_params() - arms[False, False].num_params() == (d + 4) * d + d

    torch.manual_seed(0)
    model = build_model("matcher-tiny").eval()  # d4a4
    with torch.no_grad():
        before = model(segment_batch["audio"], segment_batch["midi"])
        model.audio_encoder.inject_a4.weight[:, d:] = 0  # cut the A4 columns
        model.midi_encoder.inject_d4.weight[:, d:] = 0  # and the D4 ones
        after = model(segment_batch["audio"], segment_batch["midi"])
    assert not torch.allclose(before.audio, after.audio, atol=1e-4)
    assert not torch.allclose(before.midi, after.midi, atol=1e-4)


def test_midi_inputs_are_relative_to_the_window_and_clipped():
    notes = np.array([
        [0.0, 9.0, 40, 50],  # held from before the window, still sounding
        [1.0, 2.0, 60, 60],  # over before the window: left out
        [2.5, 3.0, 62, 70],
        [4.0, 8.0, 64, 80],  # rings past the window's end
        [6.0, 6.5, 65, 90],  # after the window: left out
    ])
    m = midi_inputs(notes, 2.0, seconds=4.0)
    n = int(m["mask"].sum())
    assert n == 3 and m["mask"][:n].all() and not m["mask"][n:].any()
    assert m["pitch"][:n].tolist() == [40, 62, 64] and m["velocity"][:n].tolist() == [50, 70, 80]
    assert np.allclose(m["onset"][:n], [0.0, 0.5, 2.0])
    assert np.allclose(m["duration"][:n], [4.0, 0.5, 2.0])
    assert all(len(v) == MAX_NOTES for v in m.values())
    crowded = np.array([[0.01 * i, 3.0, 60, 64] for i in range(MAX_NOTES + 10)])
    kept = midi_inputs(crowded, 0.0)
    assert kept["mask"].all() and kept["onset"][0] == pytest.approx(0.1)  # the earliest are dropped


def test_rendered_segments_sound_their_notes_at_their_times(data_dir, tmp_path):
    piece = load_pieces([data_dir / TUNE])[0]
    renders = render_pieces([piece], soundfonts=("FluidR3_GM", "MuseScore_General"), per_piece=2, seconds=24,
                            cache_dir=tmp_path)
    assert [r.time_scale == 1.0 for r in renders] == [True, False]
    assert {r.soundfont for r in renders} == {"FluidR3_GM", "MuseScore_General"}
    stamps = [r.path.stat().st_mtime_ns for r in renders]
    again = render_pieces([piece], soundfonts=("FluidR3_GM", "MuseScore_General"), per_piece=2, seconds=24,
                          cache_dir=tmp_path)
    assert [r.path for r in again] == [r.path for r in renders]  # cached: nothing is rendered again
    assert [r.path.stat().st_mtime_ns for r in again] == stamps and len(list(tmp_path.glob("*.npy"))) == 2
    hop = 512
    for render_ in renders:
        segments = Segments([render_])
        assert len(segments) >= 15
        chroma, profiles, lags = [], [], np.zeros(21)
        for j in range(len(segments)):
            example = segments[j]
            audio, midi = example["audio"], example["midi"]
            start = segments.windows[j, 1] / SR
            assert audio.shape == (SEGMENT_SAMPLES,) and audio.dtype == np.float32
            n = int(midi["mask"].sum())
            onset, duration = midi["onset"][:n], midi["duration"][:n]
            assert (onset >= 0).all() and (onset + duration <= SEGMENT_SECONDS + 1e-6).all()
            inside = render_.notes[(render_.notes[:, 0] > start) & (render_.notes[:, 0] < start + SEGMENT_SECONDS)]
            assert np.allclose(onset[onset > 0], inside[:, 0] - start, atol=1e-6)  # times relative to the window
            # pitch content: the audio's chroma against the notes' pitch classes, weighted by duration
            chroma.append(librosa.feature.chroma_stft(y=audio, sr=SR, n_fft=4096, hop_length=hop).mean(axis=1))
            profiles.append(np.bincount(midi["pitch"][:n] % 12, weights=duration, minlength=12))
            # timing: the audio's onset strength against the notes' onsets, at lags of -10..10 frames
            flux = librosa.onset.onset_strength(y=audio, sr=SR, hop_length=hop)
            train = np.zeros(len(flux))
            train[np.round(onset[onset > 0] * SR / hop).astype(int).clip(0, len(flux) - 1)] = 1
            lags += [np.dot(np.roll(train, lag), flux) for lag in range(-10, 11)]
        # A tune stays in one key, so compare what changes from window to window: centred profiles.
        def unit(x):
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        chroma, profiles = np.array(chroma), unit(np.array(profiles))
        sim = unit(chroma - chroma.mean(axis=0)) @ unit(profiles - profiles.mean(axis=0)).T
        far = np.abs(np.subtract.outer(np.arange(len(sim)), np.arange(len(sim)))) >= 4  # windows not overlapping
        assert np.diag(sim).mean() > sim[far].mean() + 0.4, render_.soundfont
        assert abs(int(np.argmax(lags)) - 10) <= 2, lags  # onsets in the audio within ~40 ms of the MIDI's


def test_training_segments_are_seeded_and_augmented(data_dir, tmp_path):
    piece = load_pieces([data_dir / TUNE])[0]
    segments = Segments(render_pieces([piece], soundfonts=("FluidR3_GM",), per_piece=1, seconds=12, cache_dir=tmp_path))
    train = TrainingSegments(segments, seed=3, augment=AudioAugment())
    a, b = train[5], train[5]
    assert np.array_equal(a["audio"], b["audio"]) and np.array_equal(a["midi"]["pitch"], b["midi"]["pitch"])
    assert not np.array_equal(train[5]["audio"], TrainingSegments(segments, seed=4, augment=AudioAugment())[5]["audio"])
    clean = TrainingSegments(segments, seed=3, augment=None)[5]
    assert np.array_equal(clean["midi"]["onset"], a["midi"]["onset"])  # the MIDI side is never augmented
    assert not np.allclose(clean["audio"], a["audio"])


def test_augmentation_keeps_length_changes_the_signal_and_respects_the_snr(data_dir, tmp_path):
    piece = load_pieces([data_dir / TUNE])[0]
    audio = Segments(render_pieces([piece], soundfonts=("FluidR3_GM",), per_piece=1, seconds=12,
                                   cache_dir=tmp_path))[3]["audio"]
    for seed in range(8):
        out = augment_audio(audio, np.random.default_rng(seed))
        assert out.shape == audio.shape and out.dtype == np.float32 and np.isfinite(out).all()
        assert not np.allclose(out, audio, atol=1e-4)
        assert np.array_equal(out, augment_audio(audio, np.random.default_rng(seed)))
    noise_only = AudioAugment(gain_db=0, eq_prob=0, reverb_prob=0, noise_prob=1)
    for seed in range(20):
        out = augment_audio(audio, np.random.default_rng(seed), noise_only)
        snr = 10 * np.log10(np.sum(audio.astype(np.float64) ** 2) / np.sum((out - audio).astype(np.float64) ** 2))
        assert 10 - 0.05 <= snr <= 40 + 0.05
    noisy = add_noise(audio.astype(np.float64), np.random.default_rng(0), snr_db=20)
    assert 10 * np.log10(np.sum(audio.astype(np.float64) ** 2) / np.sum((noisy - audio) ** 2)) == pytest.approx(20)
    eq_only = AudioAugment(gain_db=0, eq_prob=1, reverb_prob=0, noise_prob=0)
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)

    def octave_db(x):
        power = np.abs(np.fft.rfft(x)) ** 2
        return np.array([10 * np.log10(power[(freqs >= lo) & (freqs < hi)].sum())
                         for lo, hi in itertools.pairwise(A4_BAND_EDGES_HZ)])

    for seed in range(5):
        change = octave_db(augment_audio(audio, np.random.default_rng(seed), eq_only)) - octave_db(audio)
        assert np.ptp(change) > 1.0 and np.abs(change).max() < 25  # a colouring, not a gain or a wreck


def test_retrieval_protocol_with_oracle_random_and_collapsed_embeddings():
    rng = np.random.default_rng(0)
    oracle = rng.standard_normal((2000, 256))
    perfect = retrieval(oracle, oracle * 3.0, seed=0, n_queries=500, pool=256)  # cosine ignores scale
    assert perfect["S"] == 1.0 and perfect["audio_to_midi"]["R@1"] == perfect["midi_to_audio"]["MRR"] == 1.0
    chance = retrieval(oracle, rng.standard_normal((2000, 256)), seed=0, n_queries=500, pool=256)
    for k in (1, 5, 10):
        for way in ("audio_to_midi", "midi_to_audio"):
            assert chance[way][f"R@{k}"] == pytest.approx(k / 256, abs=0.03)
    collapsed = retrieval(np.ones((300, 8)), np.ones((300, 8)), seed=0, n_queries=50, pool=20)
    assert collapsed["S"] == 0.0  # ties count against the query
    noise = rng.standard_normal((2000, 256))
    assert retrieval(oracle, noise, seed=5, n_queries=100, pool=50) == retrieval(oracle, noise, seed=5, n_queries=100,
                                                                                 pool=50)
    assert retrieval(oracle, noise, seed=5, n_queries=100, pool=50) != retrieval(oracle, noise, seed=6, n_queries=100,
                                                                                 pool=50)


def test_matcher_training_settings_are_typed_and_checked():
    config = apply_overrides(MatcherTrainConfig(), {"loss": "infonce", "use_a4": "false", "render_seconds": "30"})
    assert (config.loss, config.use_a4, config.render_seconds) == ("infonce", False, 30.0)
    with pytest.raises(BadInputError, match="loss"):
        apply_overrides(MatcherTrainConfig(), {"loss": "triplet"})
    with pytest.raises(BadInputError, match="Steinway"):
        apply_overrides(MatcherTrainConfig(), {"soundfonts": "FluidR3_GM,Steinway"})
    with pytest.raises(BadInputError, match="robustness"):
        apply_overrides(MatcherTrainConfig(), {"soundfonts": "TimGM6mb"})


SMOKE = {"max_items": 4, "max_steps": 30, "batch_size": 8, "log_every": 1, "eval_every": 30, "eval_windows": 16,
         "warmup_steps": 5, "render_seconds": 12.0}


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("matcher")
    out = run("matcher", "tiny", data_dir=data_dir, out_dir=root / "matcher-tiny", run_dir=root / "run",
              overrides=SMOKE, command="pianoapp train matcher --config tiny")
    return out, root / "run"


def test_tiny_training_lowers_the_loss_and_writes_a_loadable_model(trained):
    out, run_dir = trained
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0  # VICReg starts near 26
    assert any("val_S" in r for r in log)

    doc = load_config(out)
    assert doc["family"] == "matcher" and doc["model"]["use_a4"] and doc["data"]["held_out_soundfont"] == "TimGM6mb"
    model = load_model(out, device="cpu")
    state = torch.load(run_dir / "last.pt", weights_only=False)["model"]
    assert torch.equal(model.midi_head.net[0].weight, state["midi_head.net.0.weight"].half().float())
    card = (out / "MODEL_CARD.md").read_text()
    for needle in ("pianoapp train matcher --config tiny", "| FluidR3_GM |", "| TimGM6mb |", "test_S", "Arm d4a4"):
        assert needle in card


def test_evaluation_returns_the_documented_report(trained, data_dir):
    out, _ = trained
    report = evaluate_matcher(out, data_dir=data_dir, seeds=2, n_queries=20, pool=16, max_items=4)
    assert {"split", "soundfont", "pieces", "segments", "queries", "pool", "seeds", "audio_to_midi", "midi_to_audio",
            "S", "chance", "per_seed"} <= set(report)
    assert report["soundfont"] == "FluidR3_GM" and report["pool"] == 16 and report["seeds"] == [0, 1]
    assert set(report["audio_to_midi"]) == {"R@1", "R@5", "R@10", "MRR"}
    assert 0 <= report["S"]["mean"] <= 1 and report["chance"]["R@10"] == 10 / 16
    assert report == evaluate_matcher(out, data_dir=data_dir, seeds=2, n_queries=20, pool=16, max_items=4)


def test_cli_eval_matcher_prints_one_json_document(trained, data_dir, tmp_path, capsys):
    """On a small data folder: three real Nottingham tunes of the test split, the other collections empty."""
    from pianoapp.data.corpora import load_collection
    from pianoapp.data.splits import split_of

    out, _ = trained
    (tmp_path / "nottingham").mkdir()
    for item in [i for i in load_collection("nottingham", data_dir) if split_of(i.piece_id) == "test"][:3]:
        (tmp_path / "nottingham" / item.path.name).symlink_to(item.path)
    (tmp_path / "pop909").mkdir()
    (tmp_path / "pop909" / "index.csv").write_text("song_id,name,artist,num_beats_per_measure,num_quavers_per_beat\n")
    (tmp_path / "asap").mkdir()
    (tmp_path / "asap" / "metadata.csv").write_text("composer,title,folder,midi_score,midi_performance\n")
    capsys.readouterr()
    assert cli.main(["eval", "matcher", "--model", str(out), "--data", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    protocol = report["protocol"]
    assert protocol["pieces"] == 3 and len(protocol["seeds"]) == 5 and "S" in protocol
    assert len(report["robustness"]) == 10 and report["robustness"]["as written"]["S"] == protocol["S"]
    matching = report["matching"]
    assert matching["pieces_indexed"] + matching["pieces_held_out"] == 3
    assert 0 <= matching["R@1"] <= 1 and "baseline" in matching
