"""Arrangement pairs from POP909, the arranger's token layout, the rule-based baseline and the
arrangement metrics."""

import numpy as np
import pretty_midi
import pytest
import torch

from pianoapp.data.arrangement import (
    ACC,
    BAR,
    MIN_CHORD_S,
    ArrangementCodec,
    ArrangementExamples,
    ArrangementPairs,
    Style,
    fit_context,
    load_songs,
    read_song,
    song_pair,
)
from pianoapp.data.corpora import load_collection
from pianoapp.evaluate.arrangement import (
    chord_accuracy,
    evaluate_arrangers,
    groove_similarity,
    melody_preservation,
    pitch_class_entropy,
)
from pianoapp.io.leadsheet import Chord, LeadSheet, read_leadsheet
from pianoapp.models.rule_arranger import arrange, arrange_midi


@pytest.fixture(scope="module")
def song(data_dir):
    item = next(item for item in load_collection("pop909", data_dir) if item.item_id == "pop909/001")
    return read_song(item)


@pytest.fixture(scope="module")
def codec():
    return ArrangementCodec()


def sheet_of(chords: list[Chord], melody: list[pretty_midi.Note], bars: int = 1, metre: str = "4/4") -> LeadSheet:
    return LeadSheet(melody=melody, chords=chords, downbeats=np.arange(bars) * 2.0, end_s=2.0 * bars,
                     tempo_bpm=120.0, metre=metre, key="C major")


def test_song_001_bars_and_segments(song):
    """Song 001 is in 4/4 at 90 qpm: four beats of 0.667 s a bar; 4-bar segments every 2 bars."""
    assert (song.metre, song.tempo_bpm, song.key) == ("4/4", 90.0, "Gb major")
    bars = np.diff(song.downbeats) / 1000
    assert np.median(bars) == pytest.approx(4 * 0.6667, abs=0.01)
    assert song.piano[-1, 1] <= song.downbeats[-1] + 10_000  # the annotated bars cover the song
    pairs = ArrangementPairs([song])
    windows = list(range(0, song.n_bars - 3, 2))
    assert set(pairs.segments[:, 1].tolist()) <= set(windows) and (pairs.segments[:, 0] == 0).all()
    assert len(windows) - 2 <= len(pairs) <= len(windows)  # only windows where the piano is silent are left out
    pair = pairs.pair(10)
    sheet = pair.leadsheet
    assert sheet.n_bars == 4 and sheet.downbeats[0] == 0 and sheet.end_s == pytest.approx(bars[20:24].sum(), abs=1e-3)
    assert pair.accompaniment and all(0 <= n.start < sheet.end_s and n.end <= sheet.end_s + 1e-9 for n in pair.accompaniment)
    assert sheet.chords and sheet.chords[0].start == 0 and sheet.chords[-1].end == pytest.approx(sheet.end_s)


def test_transposition_moves_everything_together(song):
    pair = song_pair(song, 20)
    up = pair.transpose(5)
    assert [n.pitch for n in up.leadsheet.melody] == [n.pitch + 5 for n in pair.leadsheet.melody]
    assert [n.pitch for n in up.accompaniment] == [n.pitch + 5 for n in pair.accompaniment]
    for a, b in zip(pair.leadsheet.chords, up.leadsheet.chords):
        assert (b.root, b.quality, b.start) == ((a.root + 5) % 12 if a.root is not None else None, a.quality, a.start)
        assert b.bass == (None if a.bass is None else (a.bass + 5) % 12)
    assert up.leadsheet.key == "B major" and pair.transpose(-6).leadsheet.key == "C major"
    back = up.transpose(-5)
    assert [(n.pitch, n.start) for n in back.accompaniment] == [(n.pitch, n.start) for n in pair.accompaniment]


def test_tokens_round_trip(song, codec):
    tok = codec.tokenizer
    step = tok.config.time_step_ms / 1000
    for first in (6, 30, 56):
        pair = song_pair(song, first).transpose(-3)
        sheet = pair.leadsheet
        assert sheet.melody and pair.accompaniment
        ids, target = codec.encode(sheet, pair.accompaniment)
        assert len(ids) == len(target) and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert ids.count(codec.bar_id) == 4 and ids.count(codec.acc_id) == 4
        decoded = codec.decode(ids, sheet.downbeats)
        for original, back in ((sheet.melody, decoded.melody), (pair.accompaniment, decoded.accompaniment)):
            a = sorted((n.start, n.pitch) for n in original)
            b = sorted((n.start, n.pitch) for n in back)
            assert [p for _, p in a] == [p for _, p in b]
            assert np.abs(np.array([s for s, _ in a]) - [s for s, _ in b]).max() <= step / 2 + 1e-9
            ends = np.array(sorted(n.end for n in original)) - sorted(n.end for n in back)
            assert np.abs(ends).max() <= step + 1e-9
        kept = [c for c in sheet.chords if c.end - c.start >= MIN_CHORD_S]
        assert [(c.root, c.quality, c.bass) for c in decoded.chords] == [(c.root, c.quality, c.bass) for c in kept]
        assert np.abs([c.start for c in decoded.chords] - np.array([c.start for c in kept])).max() <= step
        # Without downbeats, bars follow one another at the lengths their headers say.
        free = codec.decode(ids)
        assert len(free.accompaniment) == len(pair.accompaniment)
        assert np.abs(np.array([n.start for n in free.accompaniment]) - [n.start for n in decoded.accompaniment]).max() < 0.03


def test_targets_and_grammar_agree_with_the_data(song, codec):
    tok = codec.tokenizer
    pair = song_pair(song, 40)
    ids, target = codec.encode(pair.leadsheet, pair.accompaniment)
    names = [tok.vocab[i] for i in ids]
    section = None
    for name, is_target in zip(names, target):
        # Learned: everything after an <acc>, up to and including the <bar> or <E> that closes it.
        assert is_target == (section == ACC)
        section = name if name in (BAR, "<mel>", ACC) else section
    for j in range(1, len(ids)):
        if target[j]:
            assert codec.allowed_next(ids[:j])[ids[j]], f"{names[j]} after {names[j - 3:j]}"
    # Inside an accompaniment, no conditioning token may be sampled, and onsets stay inside the bar.
    first_acc = ids.index(codec.acc_id) + 1
    mask = codec.allowed_next(ids[:first_acc])
    assert not mask[codec.mel_id] and not mask[codec.acc_id] and mask[codec.bar_id] and mask[tok.eos_id]
    assert not mask[tok.token_to_id["root:C"]] and not mask[tok.token_to_id["onset:0"]]
    bar_steps = ids[ids.index(codec.bar_id) + 2] - tok.dur_offset + 1
    after_note = codec.allowed_next([*ids[:first_acc], tok.token_to_id["note:60:v5"]])
    assert after_note[tok.onset_offset + bar_steps] and not after_note[tok.onset_offset + bar_steps + 1]
    with pytest.raises(ValueError, match="<acc> section"):
        codec.allowed_next(ids[: ids.index(codec.mel_id) + 1])


def test_examples_are_seeded_padded_and_referenced(song, codec):
    pairs = ArrangementPairs([song])
    examples = ArrangementExamples(pairs, codec, context_len=512, seed=3)
    a, b = examples[7], examples[7]
    assert a["ids"].shape == (513,) and a["target"].shape == (513,)
    assert (a["ids"] == b["ids"]).all() and a["reference"] == b["reference"]
    assert a["reference"] != a["segment"]
    assert abs(pairs.segments[a["reference"], 1] - pairs.segments[a["segment"], 1]) >= 4  # apart
    assert pairs.segments[a["reference"], 0] == pairs.segments[a["segment"], 0]  # same song
    real = int((a["ids"] != codec.tokenizer.pad_id).sum())
    assert a["target"][:real].any() and not a["target"][real:].any()
    # Too long for the context: whole bars are kept, up to the <bar> that closes the last of them.
    ids, target = codec.encode(pairs.pair(5).leadsheet, pairs.pair(5).accompaniment)
    third = [j for j, i in enumerate(ids) if i == codec.bar_id][2]
    cut, cut_target = fit_context(ids, target, third + 20, codec.bar_id)
    assert (cut, cut_target) == (ids[: third + 1], target[: third + 1]) and cut_target[-1]
    assert fit_context(ids, target, 10, codec.bar_id)[0] == ids[:10]
    piano = pairs.piano(a["reference"])
    assert piano.shape[1] == 4 and piano[:, 0].min() >= 0


def test_style_counts_notes_pitch_and_chords():
    def note(pitch, start, length=0.4):
        return pretty_midi.Note(80, pitch, start, start + length)

    # Triads on each beat at 120 bpm over 4 s (a 0.02 s spread still counts as one onset) ...
    block = [note(p, beat * 0.5 + 0.01 * k) for beat in range(8) for k, p in enumerate((48, 52, 55))]
    # ... against a single line an octave and a half higher, a third as many notes a second.
    line = [note(72 + (k % 5), k * 0.5) for k in range(4)]
    b, s = Style.of(block), Style.of(line)
    assert b.poly == 3 and s.poly == 1 and b.register == 52 and s.register == 73.5
    assert b.density == pytest.approx(24 / 3.92) and s.density == pytest.approx(4 / 1.9)
    assert b.tokens() == ["density:4", "register:1", "poly:5"] and s.tokens() == ["density:0", "register:6", "poly:0"]
    assert Style.of([]) is None
    assert "notes a second around E3" in b.describe()


def test_style_is_stated_after_the_start_and_can_be_changed(song, codec):
    pair = song_pair(song, 40)
    style = Style.of(pair.accompaniment)
    ids, target = codec.encode(pair.leadsheet, pair.accompaniment, style)
    plain, plain_target = codec.encode(pair.leadsheet, pair.accompaniment)
    vocab = codec.tokenizer.vocab
    assert [vocab[i] for i in ids[1:4]] == style.tokens() and not any(target[:4])
    assert ids[4:] == plain[1:] and target[4:] == plain_target[1:]
    def rows(ids):
        return [(n.start, n.end, n.pitch, n.velocity) for n in codec.decode(ids).accompaniment]

    assert rows(ids) == rows(plain)  # the style is not notes
    examples = ArrangementExamples(ArrangementPairs([song]), codec, context_len=512, seed=3)
    item = examples[7]
    real = int((item["ids"] != codec.tokenizer.pad_id).sum())
    none_ids, none_target = codec.restyle(item["ids"], item["target"], None)  # the default style
    assert none_ids.shape == item["ids"].shape and int((none_ids != codec.tokenizer.pad_id).sum()) == real - 3
    assert none_ids[1] == codec.bar_id and none_target.sum() == item["target"].sum()
    sparse = Style(1.0, 80.0, 1.0)
    back, back_target = codec.restyle(none_ids, none_target, sparse)
    assert [vocab[i] for i in back[1:4]] == sparse.tokens() and torch.equal(back[4:], item["ids"][4:])
    assert torch.equal(back_target, item["target"])


def test_own_references_are_stage_two_transposed_items_only(song, codec):
    from pianoapp.train.arranger import ReferencedExamples

    pairs = ArrangementPairs([song])
    examples = ArrangementExamples(pairs, codec, context_len=512, seed=3)
    options = {"seed": 3, "augment": None, "stage1_items": 10, "drop": 0.0}
    own = ReferencedExamples(examples, own=1.0, **options)
    plain = ReferencedExamples(examples, **options)
    for i in range(40):
        item, reference, _ = own._draw(i)
        expected = item["segment"] if i >= 10 and item["semitones"] else plain._draw(i)[1]
        assert reference == expected and plain._draw(i)[1] != item["segment"]
    assert any(own._draw(i)[1] == own._draw(i)[0]["segment"] for i in range(10, 40))
    assert ArrangementExamples(pairs, codec, context_len=512, seed=3, transpose=False)[7]["semitones"] == 0


def test_songs_are_cached(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_songs("test", data_dir=data_dir, max_songs=2)
    files = sorted((tmp_path / "pianoapp").glob("arrangement-v*/*.npz"))
    assert len(files) == 2
    again = load_songs("test", data_dir=data_dir, max_songs=2)
    for a, b in zip(first, again):
        assert a.song_id == b.song_id and (a.metre, a.key, a.tempo_bpm) == (b.metre, b.key, b.tempo_bpm)
        for field in ("melody", "piano", "chords", "downbeats"):
            assert np.array_equal(getattr(a, field), getattr(b, field))


def test_baseline_follows_chords_and_keeps_the_melody_on_top(song, data_dir):
    for pair in (song_pair(song, 30), song_pair(song, 50)):
        sheet = pair.leadsheet
        accompaniment = arrange(sheet)
        assert accompaniment and max(n.end for n in accompaniment) <= sheet.end_s + 1e-9
        assert chord_accuracy(sheet.chords, accompaniment) >= 0.9
        assert melody_preservation(sheet, accompaniment) == 1.0
    sheet = read_leadsheet(data_dir / "nottingham" / "jigs215.mid")  # 6/8: triplet-eighth broken chords
    accompaniment = arrange(sheet)
    assert chord_accuracy(sheet.chords, accompaniment) >= 0.9 and melody_preservation(sheet, accompaniment) == 1.0
    onsets = np.array(sorted({round(n.start, 3) for n in accompaniment if n.start < 1.5}))
    assert np.allclose(onsets, [0.0, 0.75, 1.0, 1.25])  # bar 1 (C): a block chord, then three quavers
    pm = arrange_midi(sheet)
    assert [i.name for i in pm.instruments] == ["melody", "accompaniment"] and pm.instruments[1].notes


def test_metrics_on_crafted_input():
    c_major = [Chord(0.0, 2.0, 0, "maj")]
    melody = [pretty_midi.Note(90, 72, 0.0, 1.0), pretty_midi.Note(90, 76, 1.0, 2.0)]  # C5 then E5
    below = [pretty_midi.Note(60, p, 0.0, 2.0) for p in (48, 52, 55)]
    sheet = sheet_of(c_major, melody)
    assert melody_preservation(sheet, below) == 1.0
    above = [pretty_midi.Note(60, 79, 1.0, 2.0)]  # G5 over the E5: half of the melody frames lost
    assert melody_preservation(sheet, above) == 0.5
    octave = [pretty_midi.Note(60, 84, 0.0, 1.0)]  # C6 doubles the C5: still the melody's chroma
    assert melody_preservation(sheet, octave) == 1.0
    assert np.isnan(melody_preservation(sheet_of(c_major, []), below))

    assert chord_accuracy(c_major, below) == 1.0
    minor = [pretty_midi.Note(60, p, 0.0, 2.0) for p in (48, 51, 55)]
    assert chord_accuracy(c_major, minor) == 0.0
    seventh = [Chord(0.0, 1.0, 7, "7"), Chord(1.0, 2.0, 9, "min7"), Chord(2.0, 3.0, None)]
    notes = [pretty_midi.Note(60, p, 0.0, 1.0) for p in (43, 47, 50, 53)]  # G7: right
    notes += [pretty_midi.Note(60, p, 1.0, 1.5) for p in (45, 48, 52)]  # Am for half of the span: right
    assert chord_accuracy(seventh, notes) == 1.0
    notes_wrong = notes[:4] + [pretty_midi.Note(60, p, 1.0, 2.0) for p in (41, 45, 48)]  # F over Am7
    assert chord_accuracy(seventh, notes_wrong) == pytest.approx(0.5)
    assert np.isnan(chord_accuracy(seventh, []))

    four = sheet_of(c_major, melody, bars=4)
    same_pc = [pretty_midi.Note(60, 60 + 12 * (k % 2), k * 0.5, k * 0.5 + 0.4) for k in range(16)]
    assert pitch_class_entropy(four, same_pc) == 0.0
    chromatic = [pretty_midi.Note(60, 60 + k, 0.1 * k, 0.1 * k + 0.1) for k in range(12)]
    assert pitch_class_entropy(four, chromatic, bars=4) == pytest.approx(np.log2(12))
    assert groove_similarity(four, same_pc) == 1.0  # every bar: onsets on beats 1-4
    offbeat = [pretty_midi.Note(60, 60, 2.0 * b + 0.25 + 0.5 * k, 2.0 * b + 0.5 + 0.5 * k) for b in (1, 3) for k in range(4)]
    onbeat = [pretty_midi.Note(60, 60, 2.0 * b + 0.5 * k, 2.0 * b + 0.25 + 0.5 * k) for b in (0, 2) for k in range(4)]
    # Bars 0/2 and 1/3 agree (2 pairs of 6), the other 4 pairs differ in 8 of 16 positions.
    assert groove_similarity(four, onbeat + offbeat) == pytest.approx((2 * 1.0 + 4 * 0.5) / 6)


def test_evaluation_protocol(data_dir):
    report = evaluate_arrangers(data_dir=data_dir, n_segments=12, seed=1)
    assert report["segments"] == 12 and set(report["systems"]) == {"true", "baseline"}
    baseline, true = report["systems"]["baseline"], report["systems"]["true"]
    assert baseline["melody_preservation"] == 1.0 and baseline["chord_accuracy"] >= 0.9
    assert 0.5 < true["chord_accuracy"] <= 1.0 and 0.5 < true["melody_preservation"] <= 1.0
    assert set(report["references"]) == {"entropy_4bar", "groove"}
    assert evaluate_arrangers(data_dir=data_dir, n_segments=12, seed=1) == report
