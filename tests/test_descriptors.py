import numpy as np
import pretty_midi
import torch

from pianoapp.descriptors import A4_DIM, D4_DIM, a4, d4, d4_features, octave_band_energy
from pianoapp.io.midi import notes_to_midi
from pianoapp.io.render import render


def test_a4_follows_register_of_rendered_piano():
    low = render(notes_to_midi([pretty_midi.Note(90, 36, 0.0, 1.0)]))  # C2 ≈ 65 Hz, band 0
    high = render(notes_to_midi([pretty_midi.Note(90, 96, 0.0, 1.0)]))  # C7 ≈ 2093 Hz, band 5
    e_low, e_high = octave_band_energy(low).mean(axis=0), octave_band_energy(high).mean(axis=0)
    assert e_low.shape == (8,)
    # the share of treble over bass energy is far higher for the high note
    assert e_high[5] / e_high[0] > 3 * e_low[5] / e_low[0]
    feats = a4(low)
    assert feats.shape[1] == A4_DIM and feats.dtype == np.float32
    assert np.allclose(feats.mean(axis=0), 0, atol=1e-4)  # z-scored per band


def test_d4_intervals():
    feats = d4(np.array([60, 64, 67, 84]))
    assert feats.shape == (4, D4_DIM)
    assert np.allclose(feats[1], [4 / 24, 3 / 24, 4 / 24, 3 / 24])
    assert np.allclose(feats[3], [17 / 24, 0, 12 / 24, 0])  # the last two clamp to the octave
    assert np.allclose(feats[0, [0, 2]], 0)  # the first note has no predecessor
    assert d4(np.array([60])).shape == (1, 4)


def test_d4_can_read_each_chord_bottom_to_top():
    # A C major chord whose notes start 5-10 ms apart, top first, then a G a beat later.
    pitch = torch.tensor([[67, 60, 64, 67, 0]])
    onset = torch.tensor([[0.0, 0.005, 0.01, 0.5, 0.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    raw = d4_features(pitch, mask)[0, :, 0] * 24
    assert raw.tolist()[:4] == [0, -7, 4, 3]  # the order they started in: a leap down inside the chord
    chords = d4_features(pitch, mask, onset, chord_s=0.03)[0, :, 0] * 24
    assert chords.tolist() == [3, 0, 4, 0, 0]  # C-E-G upwards, then G to G; padding stays zero
