"""Hand-crafted descriptors injected into the matcher's encoders (descriptor-injected audio–MIDI paper).

A4 (audio): log-magnitude energy in 8 octave bands from 47 Hz to 12 kHz plus its temporal delta,
each band z-scored within the segment → (frames, 16).
D4 (MIDI): each note's pitch interval to its previous and next note, raw and octave-clamped,
divided by 24 → (notes, 4).
"""

import numpy as np

from pianoapp import constants

A4_N_FFT = 2048
A4_HOP = 512
A4_BAND_EDGES_HZ = (47.0, 94.0, 188.0, 375.0, 750.0, 1500.0, 3000.0, 6000.0, 12000.0)
A4_DIM = 2 * (len(A4_BAND_EDGES_HZ) - 1)
D4_DIM = 4


def octave_band_energy(audio: np.ndarray, sr: int = constants.SAMPLE_RATE) -> np.ndarray:
    """Mean log-magnitude per octave band, per STFT frame: float32 (frames, 8)."""
    import librosa

    mag = np.abs(librosa.stft(audio.astype(np.float32), n_fft=A4_N_FFT, hop_length=A4_HOP, center=True))
    logmag = np.log1p(mag)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=A4_N_FFT)
    bands = [logmag[(freqs >= lo) & (freqs < hi)].mean(axis=0)
             for lo, hi in zip(A4_BAND_EDGES_HZ, A4_BAND_EDGES_HZ[1:])]
    return np.stack(bands, axis=1).astype(np.float32)


def a4(audio: np.ndarray, sr: int = constants.SAMPLE_RATE) -> np.ndarray:
    """Octave-band log-energy and its delta, each band z-scored within the segment: float32 (frames, 16)."""
    energy = octave_band_energy(audio, sr)
    delta = np.diff(energy, axis=0, prepend=energy[:1])
    feats = np.concatenate([energy, delta], axis=1)
    # z-scoring per band keeps recording level and room colour from dominating
    feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-5)
    return feats.astype(np.float32)


def d4(pitches: np.ndarray) -> np.ndarray:
    """Local pitch intervals for a note sequence in onset order: float32 (notes, 4).

    Features: (p[i]-p[i-1])/24, (p[i+1]-p[i])/24, and the same clamped to ±12 semitones before
    dividing, so intervals within the octave stand out. Boundary notes get zeros.
    """
    p = np.asarray(pitches, dtype=np.float32)
    prev = np.zeros_like(p)
    nxt = np.zeros_like(p)
    if p.size > 1:
        prev[1:] = p[1:] - p[:-1]
        nxt[:-1] = p[1:] - p[:-1]
    feats = np.stack([prev, nxt, np.clip(prev, -12, 12), np.clip(nxt, -12, 12)], axis=1) / 24.0
    return np.clip(feats, -1.0, 1.0).astype(np.float32)
