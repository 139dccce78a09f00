"""The Aria-style tokenizer: exact round trips on real files, the grammar, and robustness."""

from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from pianoapp.errors import CorruptFileError
from pianoapp.io.midi import piano_notes, read_midi, write_midi
from pianoapp.tokenizer import Tokenizer, TokenizerConfig

TOK = Tokenizer()
STEP_S = TOK.config.time_step_ms / 1000
STEPS_PER_S = 1000 / TOK.config.time_step_ms  # the same float arithmetic as encode, so ties round alike
HALF_STEP_S = STEP_S / 2 + 1e-9
MAX_STEPS = TOK.config.max_duration_ms // TOK.config.time_step_ms


def spread(files: list[Path], k: int) -> list[Path]:
    """k files evenly spread over a sorted list, so the choice is deterministic and varied."""
    files = sorted(files)
    return [files[i * len(files) // k] for i in range(k)]


@pytest.fixture(scope="module")
def real_files(data_dir: Path) -> dict[str, list[pretty_midi.Note]]:
    """100 real pieces: POP909 arrangements, pedalled ASAP performances, Nottingham lead sheets."""
    performances = [p for p in (data_dir / "asap").rglob("*.mid") if p.name != "midi_score.mid"]
    chosen = (
        spread(list((data_dir / "pop909").glob("*/*.mid")), 35)
        + spread(performances, 30)
        + spread(list((data_dir / "nottingham").glob("*.mid")), 35)
    )
    return {str(p.relative_to(data_dir)): piano_notes(read_midi(p, max_seconds=float("inf"))) for p in chosen}


def note_key(n: pretty_midi.Note) -> tuple[int, int, int, int]:
    """(onset step, pitch, duration steps, velocity bin), duration clamped to [1 step, max]: what a round
    trip must give back. Only the clamp loses information (and a sub-step note gains a step)."""
    onset = round(n.start * STEPS_PER_S)
    dur = min(max(round(n.end * STEPS_PER_S) - onset, 1), MAX_STEPS)
    return onset, n.pitch, dur, TOK.velocity_bin(n.velocity)


def quantized(notes: list[pretty_midi.Note]) -> list[tuple[int, int, int, int]]:
    return sorted(map(note_key, notes))


def assert_round_trip(original: list[pretty_midi.Note], decoded: list[pretty_midi.Note]) -> None:
    assert len(decoded) == len(original)
    starts = [n.start for n in decoded]
    assert starts == sorted(starts)
    want = sorted(original, key=note_key)
    got = sorted(decoded, key=note_key)
    for a, b in zip(want, got):
        assert b.pitch == a.pitch
        assert TOK.velocity_bin(b.velocity) == TOK.velocity_bin(a.velocity)
        assert abs(b.start - a.start) <= HALF_STEP_S
        steps = round(a.end * STEPS_PER_S) - round(a.start * STEPS_PER_S)
        if steps > MAX_STEPS:  # clamped: the one lossy case
            assert b.end - b.start == pytest.approx(TOK.config.max_duration_ms / 1000)
        elif steps < 1:  # zero-length and near-zero notes last one step
            assert b.end - b.start == pytest.approx(STEP_S)
        else:  # the release snaps to the grid on its own, so the duration is within one step
            assert abs(b.end - a.end) <= HALF_STEP_S


def test_round_trip_on_100_real_files(real_files):
    assert len(real_files) == 100
    for name, notes in real_files.items():
        ids = TOK.encode(notes)
        assert ids[0] == TOK.bos_id and ids[-1] == TOK.eos_id, name
        decoded = TOK.decode(ids)
        assert quantized(decoded) == quantized(notes), name
        assert_round_trip(notes, decoded)
        assert TOK.encode(decoded) == ids, name  # tokenizing is idempotent


def test_time_tokens_count_segment_boundaries(real_files):
    for name, notes in real_files.items():
        ids = TOK.encode(notes, add_bos=False, add_eos=False)
        last_onset_ms = max(round(n.start * STEPS_PER_S) for n in notes) * TOK.config.time_step_ms
        assert ids.count(TOK.time_id) == last_onset_ms // TOK.config.segment_ms, name
    notes = [pretty_midi.Note(64, 60, t, t + 0.1) for t in (0.0, 4.99, 5.0, 17.3)]
    tokens = [TOK.vocab[i] for i in TOK.encode(notes)]
    assert tokens == [
        "<S>",
        *["note:60:v5", "onset:0", "dur:100"],
        *["note:60:v5", "onset:4990", "dur:100"],
        "<T>",
        *["note:60:v5", "onset:0", "dur:100"],
        "<T>", "<T>",
        *["note:60:v5", "onset:2300", "dur:100"],
        "<E>",
    ]  # fmt: skip
    assert [n.start for n in TOK.decode(TOK.vocab.index(t) for t in tokens)] == pytest.approx(
        [0.0, 4.99, 5.0, 17.3]
    )


def test_overlapping_same_pitch_notes_survive():
    notes = [
        pretty_midi.Note(100, 60, 0.0, 1.0),
        pretty_midi.Note(40, 60, 0.5, 1.5),
        pretty_midi.Note(70, 60, 0.5, 0.7),  # same start and pitch as the previous, shorter
        pretty_midi.Note(70, 60, 0.5, 0.7),  # exact duplicate
    ]
    decoded = TOK.decode(TOK.encode(notes))
    assert quantized(decoded) == quantized(notes)
    assert_round_trip(notes, decoded)


def test_zero_length_notes_last_one_step():
    notes = [pretty_midi.Note(80, 60, 1.0, 1.0), pretty_midi.Note(80, 62, 2.0, 2.003)]
    decoded = TOK.decode(TOK.encode(notes))
    assert [(n.pitch, n.start, n.end) for n in decoded] == [(60, 1.0, 1.0 + STEP_S), (62, 2.0, 2.0 + STEP_S)]
    # piano_notes itself makes them: a pedalled key struck twice at once cuts the first strike to zero.
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(90, 60, 0.0, 0.5), pretty_midi.Note(60, 60, 0.0, 0.4)]
    piano.control_changes = [pretty_midi.ControlChange(64, 127, 0.0), pretty_midi.ControlChange(64, 0, 2.0)]
    pm.instruments.append(piano)
    assert min(n.end - n.start for n in piano_notes(pm)) == 0
    decoded = TOK.decode(TOK.encode_midi(pm))
    assert sorted((n.start, n.end) for n in decoded) == [(0.0, STEP_S), (0.0, 2.0)]


def test_tracks_programs_and_drums_become_one_piano(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0, name="piano")
    piano.notes = [pretty_midi.Note(100, 60, 0.0, 0.5), pretty_midi.Note(90, 64, 1.0, 1.2)]
    piano.control_changes = [pretty_midi.ControlChange(64, 127, 0.1), pretty_midi.ControlChange(64, 0, 3.0)]
    violin = pretty_midi.Instrument(program=40, name="violin")
    violin.notes = [pretty_midi.Note(50, 76, 0.25, 2.0), pretty_midi.Note(50, 120, 2.0, 2.5)]  # 120: above C8
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    drums.notes = [pretty_midi.Note(127, 36, t, t + 0.1) for t in (0.0, 0.5, 1.0)]
    pm.instruments += [piano, violin, drums]
    path = write_midi(pm, tmp_path / "band.mid")

    decoded = TOK.decode_to_midi(TOK.encode_midi(read_midi(path)))
    assert len(decoded.instruments) == 1 and decoded.instruments[0].program == 0
    got = sorted(
        (n.pitch, round(n.start, 2), round(n.end, 2), TOK.velocity_bin(n.velocity))
        for n in decoded.instruments[0].notes
    )
    assert got == [
        (60, 0.0, 3.0, TOK.velocity_bin(100)),  # released under the pedal: sounds until the pedal lifts
        (64, 1.0, 3.0, TOK.velocity_bin(90)),
        (76, 0.25, 2.0, TOK.velocity_bin(50)),  # the violin plays piano now, unpedalled
        (108, 2.0, 2.5, TOK.velocity_bin(50)),  # folded down an octave into the piano's range
    ]


def test_encode_folds_out_of_range_pitches_and_handles_no_notes():
    notes = [pretty_midi.Note(64, 16, 0.0, 0.1), pretty_midi.Note(64, 113, 0.0, 0.1)]
    assert sorted(n.pitch for n in TOK.decode(TOK.encode(notes))) == [28, 101]
    assert TOK.encode([]) == [TOK.bos_id, TOK.eos_id]
    assert TOK.decode([TOK.bos_id, TOK.eos_id]) == []


def test_velocity_bins_are_consistent():
    bins = [TOK.velocity_bin(v) for v in range(1, 128)]
    assert bins == sorted(bins) and set(bins) == set(range(TOK.config.velocity_bins))
    assert all(TOK.velocity_bin(TOK.bin_velocity(b)) == b for b in range(TOK.config.velocity_bins))


def test_save_load_keeps_ids(tmp_path, real_files):
    notes = next(iter(real_files.values()))
    path = TOK.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(path)
    assert loaded.vocab == TOK.vocab and loaded.config == TOK.config
    assert loaded.encode(notes) == TOK.encode(notes)

    # Conditioning tokens are appended: existing ids keep their meaning, and they are saved.
    extended = TOK.with_extra_tokens("<MELODY>", "<CHORD:C:maj>")
    assert extended.vocab[: TOK.vocab_size] == TOK.vocab and extended.vocab_size == TOK.vocab_size + 2
    assert extended.encode(notes) == TOK.encode(notes)
    assert extended.token_kind(extended.vocab.index("<MELODY>")) == "special"
    reloaded = Tokenizer.load(extended.save(tmp_path / "extended.json"))
    assert reloaded.config.extra_tokens == ("<MELODY>", "<CHORD:C:maj>") and reloaded.vocab == extended.vocab
    with pytest.raises(ValueError):
        TOK.with_extra_tokens("<T>")


def test_other_configs_round_trip_and_reload(tmp_path, real_files):
    config = TokenizerConfig(time_step_ms=20, segment_ms=2000, velocity_bins=8, max_duration_ms=4000)
    tok = Tokenizer.load(Tokenizer(config).save(tmp_path / "tokenizer.json"))
    assert tok.config == config and tok.vocab_size == 5 + 88 * 8 + 100 + 200
    notes = next(iter(real_files.values()))
    ids = tok.encode(notes)
    assert tok.encode(tok.decode(ids)) == ids
    last = max(round(n.start * 50) for n in notes) * 20
    assert ids.count(tok.time_id) == last // 2000


def test_load_refuses_other_versions_and_broken_files(tmp_path):
    with pytest.raises(CorruptFileError, match="version"):
        Tokenizer.from_dict({**TOK.to_dict(), "version": "0"})
    with pytest.raises(CorruptFileError, match="vocabulary"):
        Tokenizer.from_dict({**TOK.to_dict(), "vocab": TOK.vocab[::-1]})
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(CorruptFileError):
        Tokenizer.load(broken)


def test_token_kinds_cover_the_vocabulary():
    kinds = [TOK.token_kind(i) for i in range(TOK.vocab_size)]
    assert kinds.count("note") == 88 * TOK.config.velocity_bins
    assert kinds.count("onset") == TOK.config.segment_ms // TOK.config.time_step_ms
    assert kinds.count("dur") == MAX_STEPS
    assert kinds.count("time") == 1
    assert kinds.count("special") == 4
    assert TOK.token_kind(TOK.time_id) == "time" and TOK.token_kind(TOK.eos_id) == "special"


def test_grammar_accepts_real_sequences(real_files):
    names = list(real_files)
    for name in (names[0], names[40], names[-1]):  # one per collection
        ids = TOK.encode(real_files[name][:2000]) + [TOK.pad_id]
        for i in range(len(ids)):
            assert TOK.allowed_next(ids[:i])[ids[i]], (name, i, TOK.vocab[ids[i]])


def test_grammar_rejects_what_decode_would_skip():
    note, onset = TOK.vocab.index("note:60:v5"), TOK.vocab.index("onset:2000")
    prefix = [TOK.bos_id, note, onset, TOK.vocab.index("dur:100"), note]
    mask = TOK.allowed_next(prefix)
    assert not mask[TOK.vocab.index("onset:1990")] and mask[onset] and mask[TOK.vocab.index("onset:4990")]
    assert mask.sum() == 300  # onsets 2000..4990 ms
    assert TOK.allowed_next(prefix[:3]).sum() == MAX_STEPS  # after an onset only a duration
    after_time = TOK.allowed_next(prefix[:4] + [TOK.time_id, note])
    assert after_time[TOK.vocab.index("onset:0")]  # a new segment starts from 0
    assert not TOK.allowed_next(prefix[:4])[TOK.bos_id]
    assert list(np.flatnonzero(TOK.allowed_next([TOK.bos_id, TOK.eos_id]))) == [TOK.pad_id]


def test_decode_of_random_ids_is_safe():
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = rng.integers(-3, TOK.vocab_size + 3, size=3000)
        ids = ids[ids != TOK.eos_id]
        notes = TOK.decode(ids)
        assert_valid(notes)
    assert_valid(TOK.decode(rng.integers(TOK.note_offset, TOK.vocab_size, size=20_000)))


def test_grammar_walk_decodes_every_group():
    """Sampling only what allowed_next permits yields a sequence decode reads in full."""
    rng = np.random.default_rng(1)
    ids = [TOK.bos_id]
    for _ in range(1500):
        ids.append(int(rng.choice(np.flatnonzero(TOK.allowed_next(ids)))))
        if ids[-1] == TOK.eos_id:
            ids.pop()
    notes = TOK.decode(ids)
    assert len(notes) == sum(TOK.token_kind(i) == "dur" for i in ids) > 0
    assert_valid(notes)


def assert_valid(notes: list[pretty_midi.Note]) -> None:
    starts = np.array([n.start for n in notes])
    durations = np.array([n.end - n.start for n in notes])
    assert np.all(np.diff(starts) >= 0)
    assert np.all(durations >= STEP_S - 1e-9) and np.all(
        durations <= TOK.config.max_duration_ms / 1000 + 1e-9
    )
    assert all(
        TOK.config.pitch_min <= n.pitch <= TOK.config.pitch_max and 1 <= n.velocity <= 127 for n in notes
    )
