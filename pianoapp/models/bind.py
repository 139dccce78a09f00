"""The text–audio–MIDI search model (PianoBind-style): captions, recordings and scores in one space.

Three towers:
- text: all-MiniLM-L6-v2 (`text_encoder.TextEncoder`), LoRA on its attention projections (query,
  key, value), then a linear projection into the shared space;
- audio and MIDI: the shipped matcher's towers, frozen and run outside this module. It takes their
  4 s window embeddings (`services.match.audio_windows` / `note_windows`), unit-normalised, through a
  small residual MLP adapter per modality; an item's audio (MIDI) embedding is the mean of its
  adapted windows, so the shared space is the matcher's own 256-d space, nudged. The MIDI tower also
  reads the whole piece's descriptors (`descriptors.piece_descriptors`: key, tempo, density, register,
  dynamics, texture) through a small MLP added to its pooled windows: 20 s of 4 s windows cannot say
  what key or tempo a whole piece is in, and captions do.
An item's search embedding is the normalised mean of its normalised audio and MIDI embeddings.

Only the LoRA weights, the projection, the adapters and the temperature belong to this model: its
`state_dict` holds only those, so a checkpoint is about a megabyte. The frozen MiniLM comes from its
package when the model is built; the checkpoint's config.json names the matcher it was trained with
(`matcher_id`).
`forward` returns the three embeddings and the logit scale; the loss lives in `pianoapp.losses`.
"""

import contextlib
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pianoapp import constants
from pianoapp.descriptors import PIECE_DIM
from pianoapp.errors import BadInputError
from pianoapp.models import text_encoder
from pianoapp.models.text_encoder import TextEncoder, TextEncoderConfig, backbone_dir

MATCHER_DIR = constants.MODELS_DIR / "matcher"
LORA_TARGETS = ("query", "key", "value")  # MiniLM's (BERT's) attention projections
MAX_LOGIT_SCALE = 100.0  # CLIP's cap on the learnable 1 / temperature


def matcher_id(matcher_dir: Path = MATCHER_DIR) -> str:
    """Names the matcher weights a bind model reads windows of (its calibration files change no embedding)."""
    weights = Path(matcher_dir) / "model.safetensors"
    return _digest(weights, weights.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _digest(path: Path, mtime_ns: int) -> str:  # hashed once per weights file version, not per query
    return f"matcher/{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


@dataclass
class BindConfig:
    embed_dim: int = 256  # the shared space: the matcher's embedding width
    lora_rank: int = 8  # 0: the text backbone stays frozen (the "no LoRA" baseline)
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    adapter_hidden: int = 512  # 0: no adapters, the matcher's window embeddings are used as they are
    adapter_dropout: float = 0.1
    descriptor_hidden: int = 0  # 0: the MIDI tower reads its windows only (no piece descriptors)
    max_tokens: int = 128  # captions are ~30 tokens; longer queries are cut
    opening_seconds: float = 20.0  # an item is embedded from the windows of its first this-many seconds
    init_temperature: float = 0.07


class Adapter(nn.Module):
    """x + MLP(LayerNorm(x)); the MLP's last layer starts at zero, so training starts from the
    matcher's own embeddings."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class DescriptorEncoder(nn.Module):
    """Piece descriptors (B, PIECE_DIM) → (B, dim), added to the MIDI tower's pooled windows; the last
    layer starts at zero, so training starts from the windows alone."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(PIECE_DIM, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return self.net(descriptors.float())


class TextTower(nn.Module):
    """MiniLM (frozen) with LoRA on its attention projections, mean-pooled, projected to the shared space."""

    def __init__(self, config: BindConfig):
        super().__init__()
        with torch.device("cpu"):  # pretrained weights, even where models are built on "meta" to count them
            self.encoder = TextEncoder(TextEncoderConfig(max_tokens=config.max_tokens), backbone_dir())
        self.encoder.requires_grad_(False)
        if config.lora_rank:
            from peft import LoraConfig, inject_adapter_in_model  # only when a LoRA model is built

            lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                              target_modules=list(LORA_TARGETS))
            inject_adapter_in_model(lora, self.encoder.backbone)  # adds trainable lora_A/lora_B in place
        self.proj = nn.Linear(self.encoder.dim, config.embed_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.encoder(input_ids, attention_mask)), dim=-1)


class BindOutput(NamedTuple):
    text: torch.Tensor  # (B, embed_dim), unit rows
    audio: torch.Tensor  # (B, embed_dim), unit rows
    midi: torch.Tensor  # (B, embed_dim), unit rows
    logit_scale: torch.Tensor  # () 1 / temperature, capped


class Bind(nn.Module):
    def __init__(self, config: BindConfig):
        super().__init__()
        self.config = config
        self.text = TextTower(config)
        d = config.embed_dim
        self.audio_adapter = Adapter(d, config.adapter_hidden, config.adapter_dropout) if config.adapter_hidden else nn.Identity()
        self.midi_adapter = Adapter(d, config.adapter_hidden, config.adapter_dropout) if config.adapter_hidden else nn.Identity()
        self.descriptors = (DescriptorEncoder(d, config.descriptor_hidden, config.adapter_dropout)
                            if config.descriptor_hidden else None)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    # What the checkpoint holds: everything but the pretrained MiniLM weights.

    @staticmethod
    def _pretrained(key: str) -> bool:
        return key.startswith("text.encoder.") and "lora_" not in key

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        full = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in full if k.startswith(prefix) and self._pretrained(k.removeprefix(prefix))]:
            del full[key]
        return full

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self._pretrained(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"bind weights do not fit: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        return result._replace(missing_keys=missing)

    # Towers.

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids, attention_mask)

    def embed_audio(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Audio-tower window embeddings (B, W, embed_dim) with a mask (B, W) of real windows → (B, embed_dim)."""
        return _pool(self.audio_adapter(F.normalize(windows.float(), dim=-1)), mask)

    def embed_midi(self, windows: torch.Tensor, mask: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        """MIDI-tower window embeddings (B, W, embed_dim), their mask, and the pieces' descriptors
        (B, PIECE_DIM; read only by a model with `descriptor_hidden`) → (B, embed_dim)."""
        pooled = _pool(self.midi_adapter(F.normalize(windows.float(), dim=-1)), mask)
        return pooled if self.descriptors is None else F.normalize(pooled + self.descriptors(descriptors), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio: torch.Tensor,
                audio_mask: torch.Tensor, midi: torch.Tensor, midi_mask: torch.Tensor,
                descriptors: torch.Tensor) -> BindOutput:
        return BindOutput(self.embed_text(input_ids, attention_mask), self.embed_audio(audio, audio_mask),
                          self.embed_midi(midi, midi_mask, descriptors),
                          self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE))

    @staticmethod
    def fuse(audio: torch.Tensor, midi: torch.Tensor) -> torch.Tensor:
        """Item embeddings: the normalised mean of the normalised audio and MIDI embeddings."""
        return F.normalize(F.normalize(audio, dim=-1) + F.normalize(midi, dim=-1), dim=-1)

    # Plain arrays in and out, for indexing and search.

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.text.encoder.tokenizer(list(texts), padding=True, truncation=True,
                                            max_length=self.config.max_tokens, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """float32 (len(texts), embed_dim) unit rows; blank text is refused with a sentence."""
        if any(not text.strip() for text in texts):
            raise BadInputError("The text is empty; type a few words describing the music you want.")
        out = []
        # few texts on one thread, as `text_encoder` does (read at call time: bench/search_latency.py varies it)
        with text_encoder._threads(1) if len(texts) <= text_encoder.FEW_TEXTS else contextlib.nullcontext():
            for i in range(0, len(texts), batch_size):
                out.append(self.embed_text(**self.tokenize(texts[i:i + batch_size])).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.embed_dim), np.float32)

    @torch.inference_mode()
    def encode_item(self, audio: np.ndarray, midi: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
        """One item's embedding (embed_dim,) from its audio and MIDI window embeddings ((n, dim), (m, dim))
        and its piece descriptors (PIECE_DIM,); with windows of one modality only, that modality's."""
        parts = []
        if len(audio):
            parts.append(self.embed_audio(torch.as_tensor(audio)[None], torch.ones(1, len(audio), dtype=torch.bool)))
        if len(midi):
            parts.append(self.embed_midi(torch.as_tensor(midi)[None], torch.ones(1, len(midi), dtype=torch.bool),
                                         torch.as_tensor(descriptors)[None]))
        if not parts:
            raise ValueError("an item needs audio or MIDI windows")  # callers check first
        return (self.fuse(*parts) if len(parts) == 2 else parts[0])[0].float().numpy()


def _pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(x.dtype)
    return F.normalize((x * weights).sum(1) / weights.sum(1).clamp(min=1.0), dim=-1)
