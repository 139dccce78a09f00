"""The matcher's MIDI encoder: one token per note.

Each note's pitch, velocity (binned) and duration (log-binned) embeddings are concatenated,
projected and LayerNorm-ed; optional D4 is injected by concatenation ([e; d4] → Linear back to
d_model); a sinusoidal encoding of the onset time (not the note's index, so chords and rests keep
their timing) is added; then a pre-norm transformer, masked mean pooling and a LayerNorm.

Input is a dict of padded tensors (see `pianoapp.data.segments.midi_inputs`): pitch (B, N) long,
velocity (B, N) long, onset and duration (B, N) float seconds, mask (B, N) bool, real notes first.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from pianoapp.descriptors import D4_DIM, d4_features
from pianoapp.models.audio_encoder import TransformerStack, masked_mean

ONSET_RESOLUTION_S = 0.01  # the onset encoding's unit: 10 ms, finer than a piano's timing noise


@dataclass
class MidiEncoderConfig:
    pitch_dim: int = 96
    velocity_dim: int = 48
    duration_dim: int = 48
    velocity_bins: int = 32
    duration_bins: int = 32  # log-spaced between the two limits below (as the seed)
    min_duration_s: float = 0.05
    max_duration_s: float = 4.0
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    ffn_hidden: int = 768
    dropout: float = 0.1
    d4_chord_s: float = 0.0  # D4 with chords read bottom to top (`d4_features`); 0: in event order


class MidiEncoder(nn.Module):
    def __init__(self, config: MidiEncoderConfig, *, use_d4: bool):
        super().__init__()
        self.config, self.use_d4 = config, use_d4
        self.pitch_emb = nn.Embedding(128, config.pitch_dim)
        self.velocity_emb = nn.Embedding(config.velocity_bins, config.velocity_dim)
        self.duration_emb = nn.Embedding(config.duration_bins, config.duration_dim)
        edges = torch.logspace(math.log10(config.min_duration_s), math.log10(config.max_duration_s),
                               config.duration_bins - 1)
        self.register_buffer("duration_edges", edges, persistent=False)  # recomputed, never saved
        width = config.pitch_dim + config.velocity_dim + config.duration_dim
        self.event = nn.Sequential(nn.Linear(width, config.d_model), nn.LayerNorm(config.d_model))
        self.inject_d4 = nn.Linear(config.d_model + D4_DIM, config.d_model) if use_d4 else None
        self.drop = nn.Dropout(config.dropout)
        self.transformer = TransformerStack(config.d_model, config.n_layers, config.n_heads, config.ffn_hidden,
                                            config.dropout)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, midi: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Padded notes → (pooled (B, d_model), per-layer pooled states)."""
        mask = midi["mask"]
        n = max(1, int(mask.sum(dim=1).max()))  # drop the padding no row uses
        mask = mask[:, :n]
        pitch, velocity = midi["pitch"][:, :n], midi["velocity"][:, :n]
        onset, duration = midi["onset"][:, :n].float(), midi["duration"][:, :n].float()
        velocity_bin = (velocity.clamp(0, 127) * self.config.velocity_bins) // 128
        duration_bin = torch.bucketize(duration.contiguous(), self.duration_edges)
        e = torch.cat([self.pitch_emb(pitch.clamp(0, 127)), self.velocity_emb(velocity_bin),
                       self.duration_emb(duration_bin)], dim=-1)
        e = self.event(e)
        if self.inject_d4 is not None:
            e = self.inject_d4(torch.cat([e, d4_features(pitch, mask, onset, self.config.d4_chord_s).to(e.dtype)], dim=-1))
        e = self.drop(e + sinusoid(onset / ONSET_RESOLUTION_S, self.config.d_model).to(e.dtype))
        # A row without notes would leave attention nothing to look at; its pooled output is zeros.
        attend = mask.clone()
        attend[:, 0] = True
        h, hidden = self.transformer(e, attend)
        return self.norm(masked_mean(h, mask)), hidden


def sinusoid(position: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal encoding of real-valued positions (...,) → (..., dim)."""
    freqs = torch.exp(torch.arange(0, dim, 2, device=position.device, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    angles = position.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[..., :dim]
