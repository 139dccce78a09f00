"""Hand-crafted descriptors injected into the matcher's encoders (descriptor-injected audio–MIDI paper).

A4 (audio): log-magnitude energy in 8 octave bands from 47 Hz to 12 kHz plus its temporal delta,
each band z-scored within the segment → (frames, 16).
D4 (MIDI): each note's pitch interval to its previous and next note, raw and octave-clamped,
divided by 24 → (notes, 4).
Piece descriptors (the search model's MIDI tower, `models.bind`): what `data.attributes` measures
over a whole piece's notes (key, tempo, density, register, dynamics, texture), as one vector
(PIECE_DIM,), so that an item's embedding knows what its 20 s of windows cannot: the key and tempo
of the whole piece.

The torch functions are the implementation (the encoders compute descriptors on batches, sharing
the audio encoder's STFT); `octave_band_energy`, `a4` and `d4` are the numpy door to them.
"""

import functools
import itertools

import numpy as np
import torch

from pianoapp import constants
from pianoapp.data.attributes import MAJOR_TONICS, MINOR_TONICS, TEXTURES

A4_N_FFT = 2048
A4_HOP = 512
A4_BAND_EDGES_HZ = (47.0, 94.0, 188.0, 375.0, 750.0, 1500.0, 3000.0, 6000.0, 12000.0)
A4_DIM = 2 * (len(A4_BAND_EDGES_HZ) - 1)
D4_DIM = 4
PIECE_DIM = 24 + 9 + len(TEXTURES)


def stft_magnitude(audio: torch.Tensor) -> torch.Tensor:
    """|STFT| of waveforms (..., samples) on A4's frames: float32 (..., A4_N_FFT // 2 + 1, frames).

    Frames are centred with zero padding at the ends (as librosa does), so frame t covers t * hop.
    Bins come before frames (channels first), the layout the encoder's convolutions want.
    """
    flat = audio.reshape(-1, audio.shape[-1]).float()
    window = torch.hann_window(A4_N_FFT, device=audio.device)
    spec = torch.stft(flat, A4_N_FFT, A4_HOP, window=window, center=True, pad_mode="constant", return_complex=True)
    return spec.abs().reshape(*audio.shape[:-1], *spec.shape[1:])


@functools.lru_cache(maxsize=8)
def _band_means(sr: int, device: torch.device) -> torch.Tensor:
    """(bands, bins) matrix averaging the STFT bins of each octave band."""
    freqs = torch.linspace(0, sr / 2, A4_N_FFT // 2 + 1, dtype=torch.float64)
    rows = [((freqs >= lo) & (freqs < hi)).double() for lo, hi in itertools.pairwise(A4_BAND_EDGES_HZ)]
    return torch.stack([r / r.sum() for r in rows]).float().to(device)


def octave_bands(magnitude: torch.Tensor, sr: int = constants.SAMPLE_RATE) -> torch.Tensor:
    """Mean log-magnitude per octave band: (..., bins, frames) → (..., 8, frames)."""
    return _band_means(sr, magnitude.device) @ torch.log1p(magnitude.float())


def a4_from_magnitude(magnitude: torch.Tensor, sr: int = constants.SAMPLE_RATE) -> torch.Tensor:
    """A4 of a segment's magnitude spectrogram: (..., bins, frames) → (..., 16, frames)."""
    energy = octave_bands(magnitude, sr)
    delta = torch.diff(energy, dim=-1, prepend=energy[..., :1])
    feats = torch.cat([energy, delta], dim=-2)
    # z-scoring per band keeps recording level and room colour from dominating
    mean, std = feats.mean(dim=-1, keepdim=True), feats.std(dim=-1, correction=0, keepdim=True)
    return (feats - mean) / (std + 1e-5)


def d4_features(pitch: torch.Tensor, mask: torch.Tensor, onset: torch.Tensor | None = None,
                chord_s: float = 0.0) -> torch.Tensor:
    """D4 of note sequences in onset order, padded at the end: pitch (..., N), mask (..., N) → (..., N, 4).

    Features: (p[i]-p[i-1])/24, (p[i+1]-p[i])/24, and the same clamped to ±12 semitones before
    dividing, so intervals within the octave stand out. Boundary and padding notes get zeros.

    With `onset` (..., N) seconds and `chord_s` > 0, the neighbours are taken in the order (onset's
    chord_s cell, pitch): a chord reads bottom to top, not in the order its notes happened to start
    or end (in the val split 44% of consecutive notes start within 30 ms of each other, and a third
    of those step down); the features come back in the notes' own order.
    """
    if onset is not None and chord_s > 0:
        key = (torch.floor(onset.float() / chord_s) * 256 + pitch.float()).masked_fill(~mask, float("inf"))
        order = key.argsort(dim=-1, stable=True)
        feats = d4_features(pitch.gather(-1, order), mask.gather(-1, order))
        return torch.empty_like(feats).scatter_(-2, order.unsqueeze(-1).expand_as(feats), feats)
    p = pitch.float()
    step = (p[..., 1:] - p[..., :-1]) * (mask[..., 1:] & mask[..., :-1])  # only between real notes
    prev = torch.nn.functional.pad(step, (1, 0))
    nxt = torch.nn.functional.pad(step, (0, 1))
    feats = torch.stack([prev, nxt, prev.clamp(-12, 12), nxt.clamp(-12, 12)], dim=-1) / 24.0
    return feats.clamp(-1.0, 1.0)


def octave_band_energy(audio: np.ndarray, sr: int = constants.SAMPLE_RATE) -> np.ndarray:
    """Mean log-magnitude per octave band, per STFT frame: float32 (frames, 8)."""
    return octave_bands(stft_magnitude(torch.from_numpy(np.asarray(audio, np.float32))), sr).T.numpy()


def a4(audio: np.ndarray, sr: int = constants.SAMPLE_RATE) -> np.ndarray:
    """Octave-band log-energy and its delta, each band z-scored within the segment: float32 (frames, 16)."""
    return a4_from_magnitude(stft_magnitude(torch.from_numpy(np.asarray(audio, np.float32))), sr).T.numpy()


def d4(pitches: np.ndarray) -> np.ndarray:
    """Local pitch intervals for a note sequence in onset order: float32 (notes, 4)."""
    p = torch.as_tensor(np.asarray(pitches, dtype=np.int64))
    return d4_features(p, torch.ones_like(p, dtype=torch.bool)).numpy()


def piece_descriptors(attributes: dict) -> np.ndarray:
    """`data.attributes.note_attributes` of a piece as float32 (PIECE_DIM,): its key one-hot (12 major
    tonics, then 12 minor), then key strength, log tempo, log density, polyphony, register, range,
    loudness (and whether velocities are all equal), log duration, and texture one-hot; each scaled
    to about [-1, 1]."""
    out = np.zeros(PIECE_DIM, np.float32)
    tonic, mode = attributes["key"].split()
    out[MAJOR_TONICS.index(tonic) if mode == "major" else 12 + MINOR_TONICS.index(tonic)] = 1.0
    bpm = attributes["tempo_bpm"]
    out[24:33] = (
        attributes["key_strength"],
        np.log2(bpm / 100.0) if bpm > 0 else 0.0,  # 0: too few onsets to tell, read as the prior's centre
        np.log2(max(attributes["density"], 0.25) / 4.0) / 3.0,
        (attributes["polyphony"] - 1.0) / 4.0,
        (attributes["mean_pitch"] - 64.0) / 12.0,
        attributes["pitch_range"] / 48.0 - 1.0,
        attributes["mean_velocity"] / 64.0 - 1.0,
        float(attributes["dynamics"] == "unmarked"),
        np.log2(max(attributes["duration_s"], 1.0) / 60.0) / 3.0,
    )
    out[33 + TEXTURES.index(attributes["texture"])] = 1.0
    return out
