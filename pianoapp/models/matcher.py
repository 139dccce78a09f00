"""The audio↔MIDI matcher: an audio encoder and a MIDI encoder, each followed by a 3-layer MLP head
into one shared embedding space (descriptor-injected audio–MIDI paper, section 3).

`use_a4` / `use_d4` switch the descriptor injections (the paper's arms: D0 = neither, a4, d4,
d4a4 = both). `forward` returns embeddings, never a loss (losses live in `pianoapp.losses`); with
`hidden=True` it also returns each encoder's per-layer states, mean-pooled, for CKA.
Retrieval compares embeddings by cosine similarity.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from pianoapp.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from pianoapp.models.midi_encoder import MidiEncoder, MidiEncoderConfig


class ProjectionHead(nn.Module):
    """Linear → BatchNorm → ReLU, twice, then Linear to the embedding."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, d_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Embedding(NamedTuple):
    embedding: torch.Tensor  # (B, embed_dim)
    hidden: list[torch.Tensor] | None  # per transformer layer, mean-pooled: (B, d_model) each


class MatcherOutput(NamedTuple):
    audio: torch.Tensor  # (B, embed_dim)
    midi: torch.Tensor  # (B, embed_dim)
    audio_hidden: list[torch.Tensor] | None = None
    midi_hidden: list[torch.Tensor] | None = None


@dataclass
class MatcherConfig:
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    midi: MidiEncoderConfig = field(default_factory=MidiEncoderConfig)
    embed_dim: int = 256
    head_hidden: int = 512
    use_a4: bool = True
    use_d4: bool = True

    def __post_init__(self) -> None:  # from JSON the towers arrive as dicts
        if isinstance(self.audio, dict):
            self.audio = AudioEncoderConfig(**self.audio)
        if isinstance(self.midi, dict):
            self.midi = MidiEncoderConfig(**self.midi)


class Matcher(nn.Module):
    def __init__(self, config: MatcherConfig):
        super().__init__()
        self.config = config
        self.audio_encoder = AudioEncoder(config.audio, use_a4=config.use_a4)
        self.midi_encoder = MidiEncoder(config.midi, use_d4=config.use_d4)
        self.audio_head = ProjectionHead(config.audio.d_model, config.head_hidden, config.embed_dim)
        self.midi_head = ProjectionHead(config.midi.d_model, config.head_hidden, config.embed_dim)

    def embed_audio(self, audio: torch.Tensor, *, hidden: bool = False) -> Embedding:
        """Waveforms (B, samples) at SAMPLE_RATE, e.g. 4 s segments → embeddings."""
        pooled, states = self.audio_encoder(audio)
        return Embedding(self.audio_head(pooled), states if hidden else None)

    def embed_midi(self, midi: dict[str, torch.Tensor], *, hidden: bool = False) -> Embedding:
        """Padded notes (`pianoapp.data.segments.midi_inputs`, batched) → embeddings."""
        pooled, states = self.midi_encoder(midi)
        return Embedding(self.midi_head(pooled), states if hidden else None)

    def forward(self, audio: torch.Tensor, midi: dict[str, torch.Tensor], *, hidden: bool = False) -> MatcherOutput:
        a, m = self.embed_audio(audio, hidden=hidden), self.embed_midi(midi, hidden=hidden)
        return MatcherOutput(a.embedding, m.embedding, a.hidden, m.hidden)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
