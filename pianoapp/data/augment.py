"""Audio augmentation for training the matcher: what a real recording adds to a clean render.

Gain, a random EQ (low and high shelves plus a few peaks, RBJ biquads), room reverb (a synthetic
exponentially decaying noise impulse response) and additive noise at a random SNR. Every draw comes
from the `rng` passed in, so an example is a pure function of its seed. Length never changes.
"""

from dataclasses import dataclass

import numpy as np
from scipy import signal

from pianoapp import constants


@dataclass(frozen=True)
class AudioAugment:
    gain_db: float = 6.0  # either way
    eq_prob: float = 0.5
    eq_db: float = 6.0  # each shelf and peak boosts or cuts up to this
    reverb_prob: float = 0.5
    reverb_s: tuple[float, float] = (0.2, 1.5)  # RT60 range
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)


def augment_audio(audio: np.ndarray, rng: np.random.Generator, config: AudioAugment = AudioAugment(), *,
                  sr: int = constants.SAMPLE_RATE) -> np.ndarray:
    """A randomly coloured copy of mono float audio, same length, float32."""
    out = np.asarray(audio, dtype=np.float64) * 10 ** (rng.uniform(-config.gain_db, config.gain_db) / 20)
    if rng.random() < config.eq_prob:
        out = random_eq(out, rng, max_db=config.eq_db, sr=sr)
    if rng.random() < config.reverb_prob:
        out = reverb(out, rng, rt60=rng.uniform(*config.reverb_s), sr=sr)
    if rng.random() < config.noise_prob:
        out = add_noise(out, rng, snr_db=rng.uniform(*config.snr_db))
    return out.astype(np.float32)


def random_eq(audio: np.ndarray, rng: np.random.Generator, *, max_db: float, sr: int) -> np.ndarray:
    """A low shelf, a high shelf and 1–3 peaks with random gains (±max_db), frequencies and widths."""
    sections = [
        _biquad("lowshelf", rng.uniform(80, 400), rng.uniform(-max_db, max_db), 0.707, sr),
        _biquad("highshelf", rng.uniform(2000, 8000), rng.uniform(-max_db, max_db), 0.707, sr),
    ]
    for _ in range(rng.integers(1, 4)):
        f0 = np.exp(rng.uniform(np.log(150), np.log(6000)))
        sections.append(_biquad("peak", f0, rng.uniform(-max_db, max_db), rng.uniform(0.7, 3.0), sr))
    return signal.sosfilt(np.stack(sections), audio)


def _biquad(kind: str, f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """One second-order section (RBJ Audio EQ Cookbook), normalised so a0 = 1."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    cos, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cos, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos, 1 - alpha / a]
    else:
        sign = 1 if kind == "lowshelf" else -1
        root = 2 * np.sqrt(a) * alpha
        b = [a * ((a + 1) - sign * (a - 1) * cos + root), sign * 2 * a * ((a - 1) - sign * (a + 1) * cos),
             a * ((a + 1) - sign * (a - 1) * cos - root)]
        den = [(a + 1) + sign * (a - 1) * cos + root, -sign * 2 * ((a - 1) + sign * (a + 1) * cos),
               (a + 1) + sign * (a - 1) * cos - root]
    return np.array(b + den) / den[0]


def reverb(audio: np.ndarray, rng: np.random.Generator, *, rt60: float, sr: int) -> np.ndarray:
    """Convolve with a direct path plus exponentially decaying noise (60 dB down at rt60), mixed
    wet at a random level and rescaled to the input's RMS."""
    n = max(1, int(rt60 * sr))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # ln(1000) ≈ 6.9: 60 dB of amplitude decay
    ir = tail * rng.uniform(0.2, 1.0) / np.sqrt(np.sum(tail**2))  # the room's energy relative to the direct path
    ir[0] = 1.0  # the direct path
    wet = signal.fftconvolve(audio, ir)[: len(audio)]
    return wet * _rms(audio) / max(_rms(wet), 1e-12)


def add_noise(audio: np.ndarray, rng: np.random.Generator, *, snr_db: float) -> np.ndarray:
    """Add white or pink Gaussian noise at exactly `snr_db` relative to the audio's power."""
    noise = rng.standard_normal(len(audio))
    if rng.random() < 0.5:  # pink: 1/f power, closer to room and hiss noise than white
        spectrum = np.fft.rfft(noise)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        noise = np.fft.irfft(spectrum, n=len(audio))
    noise *= _rms(audio) / max(_rms(noise), 1e-12) * 10 ** (-snr_db / 20)
    return audio + noise


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
