"""Rendering MIDI to audio with FluidSynth: repeatable, pedal honoured, every installed soundfont."""

import numpy as np
import pretty_midi
import pytest

from pianoapp import constants
from pianoapp.io.midi import notes_to_midi, read_midi
from pianoapp.io.render import RELEASE_TAIL_S, find_soundfont, list_soundfonts, render

SR = constants.SAMPLE_RATE
SOUNDFONTS = ["FluidR3_GM", "MuseScore_General", "TimGM6mb"]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def staccato(pedal: bool, velocity: int = 90) -> pretty_midi.PrettyMIDI:
    pm = notes_to_midi([pretty_midi.Note(velocity, 60, 0.0, 0.1)])
    if pedal:
        pm.instruments[0].control_changes = [pretty_midi.ControlChange(64, 127, 0.0),
                                             pretty_midi.ControlChange(64, 0, 2.0)]
    return pm


def test_installed_soundfonts_are_found():
    fonts = list_soundfonts()
    assert set(SOUNDFONTS) <= set(fonts)
    assert all(path.is_file() for path in fonts.values())
    assert find_soundfont() == next(iter(fonts.values()))
    assert find_soundfont(str(fonts["TimGM6mb"])) == fonts["TimGM6mb"]  # a path works as well as a name


def test_soundfont_from_environment_comes_first(monkeypatch):
    path = list_soundfonts()["TimGM6mb"]
    monkeypatch.setenv("PIANOAPP_SOUNDFONT", str(path))
    assert find_soundfont() == path


@pytest.mark.parametrize("soundfont", SOUNDFONTS)
def test_rendering_is_repeatable(soundfont, assets_dir):
    """Same piece, same samples, whatever was rendered before (FluidSynth keeps state between calls)."""
    chorale = read_midi(assets_dir / "bach_chorale_bwv66.6.mid")
    first = render(chorale, soundfont=soundfont)
    render(read_midi(assets_dir / "pedal_arpeggios.mid"), soundfont=soundfont)
    again = render(chorale, soundfont=soundfont)
    assert np.array_equal(first, again)


@pytest.mark.parametrize("soundfont", SOUNDFONTS)
def test_sustain_pedal_keeps_a_staccato_note_ringing(soundfont):
    after_release = slice(int(0.4 * SR), int(1.0 * SR))  # the key went up at 0.1 s
    with_pedal = render(staccato(pedal=True), soundfont=soundfont)[after_release]
    without = render(staccato(pedal=False), soundfont=soundfont)[after_release]
    assert 20 * np.log10(rms(with_pedal) / rms(without)) > 20.0  # at least 20 dB louder


def test_output_is_mono_float32_of_the_right_length(assets_dir):
    pm = read_midi(assets_dir / "folk_lead_sheet.mid")
    last_note_off = max(n.end for inst in pm.instruments for n in inst.notes)
    for sr in (SR, 16_000):
        audio = render(pm, sr=sr)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert audio.size == round((last_note_off + RELEASE_TAIL_S) * sr)
        assert np.all(np.isfinite(audio)) and 0.01 < np.abs(audio).max() < 1.0


def test_pitch_and_tuning():
    audio = render(notes_to_midi([pretty_midi.Note(90, 69, 0.0, 1.5)]), soundfont="FluidR3_GM")
    steady = audio[int(0.3 * SR) : int(1.3 * SR)] * np.hanning(SR)
    spectrum = np.abs(np.fft.rfft(steady))
    assert abs(np.argmax(spectrum) * SR / steady.size - 440.0) < 3.0  # A4


def test_velocity_sets_loudness():
    soft = render(staccato(pedal=False, velocity=30))
    loud = render(staccato(pedal=False, velocity=110))
    assert rms(loud) > 2 * rms(soft)


def test_every_track_sounds(assets_dir):
    """Melody and chords of a lead sheet each play (on their own channel), and together louder."""
    pm = read_midi(assets_dir / "folk_lead_sheet.mid")
    tracks = {inst.name: notes_to_midi(inst.notes) for inst in pm.instruments}
    both = render(pm)
    for name, alone in tracks.items():
        part = render(alone)
        assert rms(part) > 1e-3, name
        assert rms(both) > rms(part)
