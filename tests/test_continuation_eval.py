"""Continuation metrics on hand-made passages, the copy check on real pieces, and the protocol
end to end with the shipped LM."""

import math

import numpy as np
import pytest

from pianoapp import constants
from pianoapp.data.sequences import load_pieces
from pianoapp.evaluate.continuation import (
    COPY_NGRAM,
    compare,
    copy_rate,
    evaluate_continuations,
    features,
    training_ngrams,
)

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def passage(pitches, *, step_ms=250, dur_ms=200, velocity=70, start_ms=0) -> np.ndarray:
    """One note per step: rows [start_ms, end_ms, pitch, velocity]."""
    starts = start_ms + step_ms * np.arange(len(pitches))
    return np.stack([starts, starts + dur_ms, pitches, np.full(len(pitches), velocity)], axis=1).astype(np.int32)


def test_identical_passages_match_on_every_measure():
    notes = passage(C_MAJOR * 2 + [48, 55, 64])
    result = compare(features(notes, 5.0), features(notes, 5.0))
    assert result == pytest.approx({"pitch_class": 1, "ioi": 1, "duration": 1, "density_gap": 0, "velocity_gap": 0})


def test_disjoint_pitch_classes_do_not_overlap():
    a, b = passage([60, 62, 64, 72]), passage([61, 63, 66, 73])
    assert compare(features(a, 2.0), features(b, 2.0))["pitch_class"] == 0


def test_a_transposed_copy_keeps_rhythm_but_not_pitch_classes():
    scale = passage(C_MAJOR * 3, step_ms=180, dur_ms=400)
    up = scale + [0, 0, 1, 0]  # a semitone up: only C and F keep a partner (B->C, E->F)
    result = compare(features(scale, 5.0), features(up, 5.0))
    assert result["ioi"] == 1 and result["duration"] == 1 and result["density_gap"] == 0
    assert 0 < result["pitch_class"] < 0.5


def test_rhythm_density_and_velocity_differences_are_measured():
    a = passage(C_MAJOR, step_ms=250, dur_ms=200, velocity=60)
    b = passage(C_MAJOR * 2, step_ms=125, dur_ms=100, velocity=90)
    result = compare(features(a, 2.0), features(b, 2.0))
    assert result["pitch_class"] == 1
    assert result["ioi"] == 0 and result["duration"] == 0  # 125 vs 250 ms: a bin apart, both ways
    assert result["density_gap"] == pytest.approx(1.0) and result["velocity_gap"] == 30


@pytest.fixture(scope="module")
def pop_pieces(data_dir):
    return load_pieces(sorted(data_dir.glob("pop909/*/*.mid"))[:3])


def test_copy_rate_finds_a_copied_passage_and_not_a_fresh_one(pop_pieces):
    index = training_ngrams(pop_pieces)
    piece = pop_pieces[1]
    starts = piece[:, 0]
    source = piece[(starts >= starts[200]) & (starts < starts[260])]  # whole chords at both ends
    moved = source + [-source[0, 0] + 1234, -source[0, 0] + 1234, 3, 0]  # elsewhere, transposed up
    assert copy_rate(moved, index) == 1.0
    rng = np.random.default_rng(0)
    fresh = passage(60 + np.cumsum(rng.integers(-4, 5, 60)), step_ms=170)
    assert copy_rate(fresh, index) == 0.0
    assert math.isnan(copy_rate(source[: COPY_NGRAM - 1], index))


@pytest.mark.skipif(not (constants.MODELS_DIR / "lm-small" / "model.safetensors").is_file(),
                    reason="the shipped lm-small checkpoint is missing")
def test_evaluate_continuations_is_finite_and_seeded(data_dir):
    options = {"data_dir": data_dir, "n_prompts": 2, "prompt_seconds": 8.0, "seconds": 3.0, "seed": 1,
               "max_items": 30}
    first = evaluate_continuations(constants.MODELS_DIR / "lm-small", **options)
    assert first == evaluate_continuations(constants.MODELS_DIR / "lm-small", **options)
    assert first["prompts"] == 2
    for source in ("model", "true", "ngram", "other_piece"):
        scores = first["similarity_to_prompt"][source]
        assert all(math.isfinite(v) for v in scores.values()), (source, scores)
        assert 0 <= scores["pitch_class"] <= 1 and 0 <= first["copy_rate"][source] <= 1
        assert first["notes_per_continuation"][source] > 0


def test_ngram_next_probs_agree_with_its_nll():
    from pianoapp.evaluate.lm import KneserNey

    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(0, 6, 40)) for _ in range(5)]
    ngram = KneserNey(order=3).fit(seqs, vocab_size=6)
    seq = seqs[0]
    stepwise = [-np.log(ngram.next_probs(seq[:t])[seq[t]]) for t in range(1, len(seq))]
    np.testing.assert_allclose(stepwise, ngram.nll([seq]))
    assert ngram.next_probs(seq[:5]).sum() == pytest.approx(1.0)
