"""Lead sheets in: Nottingham MIDI, MusicXML and ABC with harmony, melody + chord text, POP909's
chord labels; inferred chords, unknown symbols and the bar cap."""

import itertools

import numpy as np
import pretty_midi
import pytest

from pianoapp.errors import BadInputError, TooLongError
from pianoapp.io.leadsheet import (
    MAX_BARS,
    Chord,
    arrangement_midi,
    parse_chord_label,
    parse_chord_symbol,
    pitch_class_weights,
    read_chord_lab,
    read_leadsheet,
)
from pianoapp.io.midi import notes_to_midi, read_midi, write_midi


def symbols(sheet) -> list[str]:
    return [c.symbol for c in sheet.chords]


def test_nottingham_midi(data_dir):
    """jigs215: 16 bars of 6/8, the melody in the first track, block chords C F G7 ... in the second."""
    sheet = read_leadsheet(data_dir / "nottingham" / "jigs215.mid")
    assert (sheet.n_bars, sheet.metre, sheet.beats_per_bar, sheet.key) == (16, "6/8", 2, "C major")
    assert not sheet.chords_inferred
    assert np.allclose(np.diff(sheet.downbeats), 1.5) and sheet.end_s == pytest.approx(24.0)
    assert symbols(sheet)[:6] == ["C", "F", "G7", "C", "G7", "C"]
    assert [round(c.start, 2) for c in sheet.chords[:3]] == [0.0, 1.5, 2.25]
    source = read_midi(data_dir / "nottingham" / "jigs215.mid")
    assert [n.pitch for n in sheet.melody] == [n.pitch for n in source.instruments[0].notes]
    starts = [n.start for n in sheet.melody]
    assert starts == sorted(starts) and all(a.end <= b.start + 1e-9 for a, b in zip(sheet.melody, sheet.melody[1:]))


def test_shipped_demo_lead_sheet(assets_dir):
    sheet = read_leadsheet(assets_dir / "nottingham_playford14_lead_sheet.mid")
    assert (sheet.n_bars, sheet.metre, sheet.key, sheet.chords_inferred) == (16, "4/4", "D major", False)
    assert set(symbols(sheet)) == {"D", "A", "G", "Em", "A7", "Bm"}


def test_musicxml_with_harmony(tmp_path):
    from music21 import harmony, meter, note, stream, tempo

    part = stream.Part()
    pickup = stream.Measure(number=0)
    pickup.append([meter.TimeSignature("3/4"), tempo.MetronomeMark(number=90)])
    pickup.append(note.Note("D4", quarterLength=1))
    pickup.paddingLeft = 2.0
    part.append(pickup)
    for number, (symbol, pitches) in enumerate(
        [("G", "G4 B4 D5"), ("Am7", "A4 C5 E5"), ("D7/F#", "F#4 A4 C5"), ("G", "G4 G4 G4")], start=1
    ):
        measure = stream.Measure(number=number)
        measure.insert(0, harmony.ChordSymbol(symbol))
        measure.append([note.Note(p, quarterLength=1) for p in pitches.split()])
        part.append(measure)
    score = stream.Score([part])
    path = score.write("musicxml", fp=tmp_path / "tune.musicxml")

    sheet = read_leadsheet(path)
    beat = 60 / 90
    assert (sheet.n_bars, sheet.metre, sheet.tempo_bpm, sheet.chords_inferred) == (5, "3/4", 90.0, False)
    assert sheet.downbeats == pytest.approx(np.arange(5) * 3 * beat)
    assert sheet.melody[0].pitch == 62 and sheet.melody[0].start == pytest.approx(2 * beat)  # the pickup
    assert symbols(sheet) == ["G", "Am7", "D7/F#", "G"]
    assert sheet.chords[1].start == pytest.approx(6 * beat) and sheet.chords[1].end == pytest.approx(9 * beat)
    assert (sheet.chords[2].root, sheet.chords[2].quality, sheet.chords[2].bass) == (2, "7", 6)


def test_abc_with_chords(tmp_path):
    path = tmp_path / "tune.abc"
    path.write_text('X:1\nT:t\nM:4/4\nL:1/4\nQ:1/4=120\nK:F\n"F"F A c A|"Bb"B d "C7"c B|"F"A4|\n')
    sheet = read_leadsheet(path)
    assert (sheet.n_bars, sheet.metre, sheet.tempo_bpm) == (3, "4/4", 120.0)
    assert symbols(sheet) == ["F", "Bb", "C7", "F"]
    assert [round(c.start, 2) for c in sheet.chords] == [0.0, 2.0, 3.0, 4.0]


def test_melody_plus_chord_text(data_dir):
    melody = data_dir / "nottingham" / "melody" / "hpps11.mid"  # 8 bars of 4/4 at 120 qpm
    sheet = read_leadsheet(melody, "Dm | C7 F | Bb/D Gm7 Am | Bbmaj7 A7sus4 Bm7b5 E9")
    assert not sheet.chords_inferred and sheet.n_bars == 8
    assert symbols(sheet)[:10] == ["Dm", "C7", "F", "Bb/D", "Gm7", "Am", "Bbmaj7", "A7sus4", "Bm7b5", "E7"]
    assert [round(c.start, 3) for c in sheet.chords[3:6]] == [4.0, 4.667, 5.333]  # three chords share bar 3
    assert symbols(sheet)[10:12] == ["Dm", "C7"]  # four bars of text repeat under eight bars of tune
    assert sheet.chords[-1].end == pytest.approx(sheet.end_s)


def test_unknown_chord_symbols_are_named(data_dir):
    melody = data_dir / "nottingham" / "melody" / "hpps11.mid"
    with pytest.raises(BadInputError, match=r"Unknown chord symbols: H7, Cfoo;"):
        read_leadsheet(melody, "C H7 | Cfoo G | Am")
    with pytest.raises(BadInputError, match="9 bars but the melody only 8"):
        read_leadsheet(melody, " | ".join(["C"] * 9))


def test_inferred_chords_when_there_are_none(data_dir):
    sheet = read_leadsheet(data_dir / "nottingham" / "melody" / "hpps11.mid")
    assert sheet.chords_inferred and sheet.key == "D minor"
    assert {c.quality for c in sheet.chords} <= {"maj", "min"} and symbols(sheet)[0] == "Dm"
    assert sheet.chords[0].start == 0 and sheet.chords[-1].end == pytest.approx(sheet.end_s)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(sheet.chords, sheet.chords[1:]))
    # The chords explain the tune: most of the melody's sounding time is on chord tones.
    on = total = 0.0
    for c in sheet.chords:
        w = pitch_class_weights(sheet.melody, c.start, c.end)
        on += sum(w[p] for p in c.pitch_classes)
        total += w.sum()
    assert on / total > 0.6


def test_bar_cap_and_bar_choice(tmp_path):
    notes = [pretty_midi.Note(80, 60 + k % 12, 2.0 * k, 2.0 * k + 1.5) for k in range(200)]  # 200 bars at 120 qpm
    path = write_midi(notes_to_midi(notes), tmp_path / "long.mid")
    with pytest.raises(TooLongError, match=f"long.mid has 200 bars; arrangement takes at most {MAX_BARS} — cut it"):
        read_leadsheet(path)
    sheet = read_leadsheet(path, "C | G", first_bar=10, bars=8)
    assert sheet.n_bars == 8 and sheet.downbeats[0] == 0 and sheet.end_s == pytest.approx(16.0)
    assert [n.pitch for n in sheet.melody] == [60 + k % 12 for k in range(10, 18)]
    assert symbols(sheet) == ["C", "G"] * 4
    assert read_leadsheet(path, max_bars=None).n_bars == 200
    late = write_midi(notes_to_midi([pretty_midi.Note(80, 67, 4.5, 5.0), pretty_midi.Note(80, 72, 6.0, 7.0)]),
                      tmp_path / "late.mid")
    sheet = read_leadsheet(late)  # two silent bars, a pickup in the third, the tune in the fourth
    assert sheet.n_bars == 2 and sheet.melody[0].start == pytest.approx(0.5) and sheet.end_s == pytest.approx(4.0)
    with pytest.raises(BadInputError, match="bars 201 to 204 are not there"):
        read_leadsheet(path, first_bar=200, bars=4)


def test_chord_symbols_and_pop909_labels(data_dir):
    assert parse_chord_symbol("Am7") == (9, "min7", None)
    assert parse_chord_symbol("F#m7b5") == (6, "hdim7", None)
    assert parse_chord_symbol("Ebmaj7/G") == (3, "maj7", 7)
    assert parse_chord_symbol("C6/9") == (0, "maj6", None)
    assert parse_chord_symbol("N.C.") == (None, "", None)
    assert parse_chord_symbol("H") is None and parse_chord_symbol("C/X") is None
    assert parse_chord_label("C:maj7") == (0, "maj7", None)
    assert parse_chord_label("A:min/b3") == (9, "min", 0)
    assert parse_chord_label("Gb:maj/5") == (6, "maj", 1)
    assert parse_chord_label("B:sus4(b7)") == (11, "7sus4", None)
    assert parse_chord_label("N") == (None, "", None)
    assert parse_chord_label("C:weird") is None
    chords = read_chord_lab(data_dir / "pop909" / "001" / "chord_midi.txt")
    assert chords[0].root is None and chords[0].end == pytest.approx(2.721993)  # four 'N' lines merged
    assert (chords[1].root, chords[1].quality) == (11, "maj")
    assert all(a.end <= b.start + 1e-6 and not a.same_harmony(b) for a, b in itertools.pairwise(chords))


def test_arrangement_midi_keeps_two_tracks(data_dir):
    sheet = read_leadsheet(data_dir / "nottingham" / "jigs215.mid", bars=4)
    accompaniment = [pretty_midi.Note(60, 48, 0.0, 1.5)]
    pm = arrangement_midi(sheet, accompaniment)
    assert [inst.name for inst in pm.instruments] == ["melody", "accompaniment"]
    assert len(pm.instruments[0].notes) == len(sheet.melody) and len(pm.instruments[1].notes) == 1
    assert (pm.time_signature_changes[0].numerator, pm.time_signature_changes[0].denominator) == (6, 8)
    assert Chord(0, 1, 9, "min7", 7).symbol == "Am7/G" and Chord(0, 1, None).symbol == "N.C."
