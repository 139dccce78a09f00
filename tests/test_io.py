"""Reading and writing music files: MIDI, MusicXML, audio in every format we accept, corpus files."""

import shutil
import subprocess

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from pianoapp import constants
from pianoapp.io.audio import load_audio, write_audio
from pianoapp.io.files import file_kind
from pianoapp.io.midi import notes_to_midi, piano_notes, read_midi, write_midi

SR = constants.SAMPLE_RATE
ASSET_MIDIS = ["bach_chorale_bwv66.6.mid", "mozart_k545_opening.mid", "joplin_maple_leaf_rag_opening.mid",
               "pedal_arpeggios.mid", "folk_lead_sheet.mid"]


@pytest.fixture(scope="module")
def recording(assets_dir) -> np.ndarray:
    return load_audio(assets_dir / "mozart_k545_opening.flac")


@pytest.mark.parametrize("name", ASSET_MIDIS)
def test_asset_midis_read_as_piano_parts(assets_dir, name):
    pm = read_midi(assets_dir / name)
    notes = piano_notes(pm)
    assert len(notes) >= 20
    assert all(constants.PIANO_PITCH_MIN <= n.pitch <= constants.PIANO_PITCH_MAX for n in notes)
    assert [n.start for n in notes] == sorted(n.start for n in notes)
    assert 5.0 < pm.get_end_time() < 20.0


def test_midi_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    # a key comes back every 88 notes (4.4 s), after its last note ended: no overlapping unisons
    notes = [pretty_midi.Note(int(rng.integers(1, 128)), 21 + (7 * i) % 88, 0.05 * i, 0.05 * i + float(rng.uniform(0.02, 1)))
             for i in range(200)]
    path = write_midi(notes_to_midi({"right": notes[::2], "left": notes[1::2]}), tmp_path / "sub" / "out.mid")
    back = read_midi(path)
    assert [inst.name for inst in back.instruments] == ["right", "left"]
    got = piano_notes(back)
    want = sorted(notes, key=lambda n: (n.start, n.pitch, n.end))
    assert [(n.pitch, n.velocity) for n in got] == [(n.pitch, n.velocity) for n in want]
    assert np.allclose([n.start for n in got], [n.start for n in want], atol=2e-3)  # tick rounding
    assert np.allclose([n.end for n in got], [n.end for n in want], atol=2e-3)


def test_musicxml_from_music21_corpus():
    from music21 import corpus

    path = corpus.getWork("bach/bwv66.6")
    assert file_kind(path) == "score"
    pm = read_midi(path)
    assert len(pm.instruments) == 4  # soprano, alto, tenor, bass
    assert len(piano_notes(pm)) > 100


def test_sustain_pedal_folds_into_note_lengths(assets_dir):
    pm = read_midi(assets_dir / "pedal_arpeggios.mid")
    raw = sorted(pm.instruments[0].notes, key=lambda n: (n.start, n.pitch))
    folded = piano_notes(pm)
    assert all(n.end - n.start == pytest.approx(0.15, abs=2e-3) for n in raw[:40])  # played staccato
    first_bar = [n for n in folded if n.start < 2.0]  # the pedal lifts at 2.62 s
    assert all(n.end - n.start > 0.3 for n in first_bar)  # each rings on, to its key's next strike or the lift
    bass = [n for n in first_bar if n.pitch == 36]
    assert len(bass) == 1 and bass[0].end == pytest.approx(4 * 60 / 90 - 0.05, abs=0.01)  # the pedal lifts there
    assert len(piano_notes(pm, fold_pedal=False)) == len(folded)


@pytest.mark.parametrize("fmt, subtype, tolerance_s", [
    ("FLAC", "PCM_16", 0.0), ("OGG", "VORBIS", 0.0), ("MP3", "MPEG_LAYER_III", 0.1), ("WAV", "FLOAT", 0.0),
])
def test_audio_format_round_trip(tmp_path, recording, fmt, subtype, tolerance_s):
    path = tmp_path / f"take.{fmt.lower()}"
    sf.write(path, recording, SR, format=fmt, subtype=subtype)
    back = load_audio(path)
    assert back.dtype == np.float32 and back.ndim == 1
    assert abs(back.size - recording.size) <= tolerance_s * SR + SR // 100
    n = min(back.size, recording.size)
    lag = int(np.argmax(np.correlate(back[SR : 2 * SR], recording[SR : SR + SR // 10], "valid")))  # codec delay
    aligned = back[lag : lag + n - SR]
    corr = np.corrcoef(aligned, recording[: aligned.size])[0, 1]
    assert corr > 0.95, f"{fmt}: correlation {corr:.3f} with the original"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_formats_libsndfile_cannot_read_go_through_ffmpeg(tmp_path, assets_dir):
    path = tmp_path / "take.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(assets_dir / "mozart_k545_opening.flac"), "-c:a", "aac",
                    "-b:a", "96k", str(path)], check=True)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / SR - 15.5) < 0.2


def test_write_audio_then_load(tmp_path, recording):
    path = write_audio(tmp_path / "out" / "take.wav", recording)
    assert sf.info(path).samplerate == SR and sf.info(path).channels == 1
    assert np.allclose(load_audio(path), recording, atol=1e-4)  # 16-bit WAV


def test_corpus_files_read(data_dir):
    inf = float("inf")
    pop = read_midi(data_dir / "pop909" / "001" / "001.mid", max_seconds=inf)
    assert [inst.name for inst in pop.instruments] == ["MELODY", "BRIDGE", "PIANO"]
    tune = read_midi(data_dir / "nottingham" / "ashover1.mid", max_seconds=inf)
    assert len(tune.instruments) == 2  # melody and chords
    performance = read_midi(data_dir / "asap" / "Bach" / "Fugue" / "bwv_846" / "Shi05M.mid", max_seconds=inf)
    notes = piano_notes(performance)
    raw = piano_notes(performance, fold_pedal=False)
    assert sum(n.end - n.start for n in notes) > sum(n.end - n.start for n in raw)  # the pedal lengthens
