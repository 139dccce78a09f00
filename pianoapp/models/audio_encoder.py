"""The matcher's audio encoder: a small MERT-like network over a 24 kHz waveform.

Log-mel front end (computed here, on A4's STFT frames, so A4 lines up with it frame for frame),
a 4-layer 1D CNN (GroupNorm + GELU) that may downsample in time, optional A4 injected by
concatenation after the CNN ([h; a4] → Linear back to d_model), learnable positional embeddings,
a pre-norm transformer encoder, mean pooling and a final LayerNorm.

`TransformerStack` is shared with the MIDI encoder.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pianoapp import constants
from pianoapp.descriptors import A4_DIM, A4_N_FFT, a4_from_magnitude, stft_magnitude


class TransformerStack(nn.Module):
    """Pre-norm transformer encoder layers that also hand back each layer's pooled output."""

    def __init__(self, d_model: int, n_layers: int, n_heads: int, ffn_hidden: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, ffn_hidden, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, T, d), mask (B, T) True at real positions → (x, [mean over real positions per layer])."""
        padding = None if mask is None else ~mask
        pooled = []
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
            pooled.append(masked_mean(x, mask))
        return x, pooled


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of (B, T, d) at real positions; padded positions may hold anything, even NaN."""
    if mask is None:
        return x.mean(dim=1)
    total = torch.where(mask.unsqueeze(-1), x, 0.0).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp(min=1)


@dataclass
class AudioEncoderConfig:
    n_mels: int = 64
    channels: int = 128  # CNN width; the last CNN layer outputs d_model
    strides: tuple[int, ...] = (1, 1, 1, 2)  # one per CNN layer; their product divides the frame rate
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    ffn_hidden: int = 768
    dropout: float = 0.1
    max_frames: int = 256  # positions after the CNN; 4 s is 188 STFT frames

    def __post_init__(self) -> None:
        self.strides = tuple(self.strides)  # JSON gives a list


class AudioEncoder(nn.Module):
    def __init__(self, config: AudioEncoderConfig, *, use_a4: bool):
        super().__init__()
        import librosa

        self.config, self.use_a4 = config, use_a4
        mel = librosa.filters.mel(sr=constants.SAMPLE_RATE, n_fft=A4_N_FFT, n_mels=config.n_mels, fmin=27.5,
                                  fmax=constants.SAMPLE_RATE / 2)
        self.register_buffer("mel_basis", torch.from_numpy(mel), persistent=False)  # (n_mels, bins); recomputed
        layers, width = [], config.n_mels
        for i, stride in enumerate(config.strides):
            out = config.d_model if i == len(config.strides) - 1 else config.channels
            layers += [nn.Conv1d(width, out, 3, stride=stride, padding=1), nn.GroupNorm(_groups(out), out), nn.GELU()]
            width = out
        self.cnn = nn.Sequential(*layers)
        self.inject_a4 = nn.Linear(config.d_model + A4_DIM, config.d_model) if use_a4 else None
        self.pos_emb = nn.Parameter(torch.randn(config.max_frames, config.d_model) * 0.02)
        self.drop = nn.Dropout(config.dropout)
        self.transformer = TransformerStack(config.d_model, config.n_layers, config.n_heads, config.ffn_hidden,
                                            config.dropout)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Waveforms (B, samples) at SAMPLE_RATE → (pooled (B, d_model), per-layer pooled states)."""
        return self.encode(*self.front_end(audio))

    def front_end(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Waveforms (B, samples) → (log-mel (B, n_mels, frames), A4 (B, 16, frames) or None).

        Apart from `encode` so that Explore can compute them once and encode variants of A4."""
        with torch.autocast(audio.device.type, enabled=False):  # log and STFT want float32
            magnitude = stft_magnitude(audio)  # (B, bins, frames)
            logmel = torch.log(self.mel_basis @ magnitude.pow(2) + 1e-6)  # (B, n_mels, frames)
            logmel = logmel - logmel.mean(dim=(1, 2), keepdim=True)  # level-invariant: gain is not content
            a4 = a4_from_magnitude(magnitude) if self.use_a4 else None  # (B, 16, frames)
        return logmel, a4

    def encode(self, logmel: torch.Tensor, a4: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The rest of `forward`: CNN, A4 injection, transformer, pooling."""
        h, hidden = self.frames(logmel, a4)
        return self.norm(h.mean(dim=1)), hidden

    def frames(self, logmel: torch.Tensor, a4: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`encode` before pooling: the last layer's states per frame (B, frames', d_model) and the
        per-layer pooled states (the arranger's Q-Former reads the frames)."""
        h = self.cnn(logmel).transpose(1, 2)  # (B, frames', d)
        if h.shape[1] > self.config.max_frames:
            raise ValueError(f"{h.shape[1]} frames exceed the encoder's {self.config.max_frames}; embed shorter windows")
        if a4 is not None:
            if a4.shape[2] != h.shape[1]:  # the CNN downsampled: average A4 over each output frame
                a4 = F.adaptive_avg_pool1d(a4, h.shape[1])
            h = self.inject_a4(torch.cat([h, a4.transpose(1, 2).to(h.dtype)], dim=-1))
        h = self.drop(h + self.pos_emb[: h.shape[1]])
        return self.transformer(h)


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 where the width allows (as the seed), else the largest divisor below."""
    return next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)
