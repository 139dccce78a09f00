"""The style-reference arranger (BOSSA on our own parts): a frozen piano LM writes a lead sheet's
accompaniment bar by bar, conditioned on a reference recording read by a Q-Former.

- The frozen LM (`lm`, default models/lm-small) gets LoRA adapters (peft) on its attention
  projections and trainable embedding rows for the arrangement tokens it never saw (`<bar>`,
  `<mel>`, `<acc>`, chord symbols; `data.arrangement.ARRANGEMENT_TOKENS`). Its output layer is tied
  to the embedding, so the new rows score those tokens too.
- The frozen audio encoder (`audio`, the matcher's, default models/matcher) turns REFERENCE_SECONDS
  of the reference into frames; the Q-Former's K queries read them, and a linear layer projects
  the query outputs into the LM's embedding space as a prefix of K positions before `<S>`.
- Without a reference the prefix is a learned null prefix (training drops the reference now and
  then, so the model has a default style).

A checkpoint holds only what training changes (adapters, new rows, Q-Former, projection, null
prefix; `state_dict` returns just those); building the module reads the frozen parts from the
folders its config names, so `checkpoint.load_model` composes the three.
"""

import copy
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pianoapp import constants
from pianoapp.models.lm import PianoLM
from pianoapp.models.qformer import QFormer, QFormerConfig

REFERENCE_SECONDS = 10.0  # of the reference the audio encoder reads (its positions hold about 10.9 s)
REFERENCE_SAMPLES = round(REFERENCE_SECONDS * constants.SAMPLE_RATE)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
TOKEN_RMS = 0.03  # the scale new embedding rows and the prefix start at


class ExtendedEmbedding(nn.Module):
    """A frozen token embedding with trainable rows appended; `weight` is the whole table (the LM's
    tied output layer reads it)."""

    def __init__(self, base: torch.Tensor, n_extra: int):
        super().__init__()
        self.base = nn.Parameter(base.detach(), requires_grad=False)
        self.extra = nn.Parameter(torch.randn(n_extra, base.shape[1]) * TOKEN_RMS)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.base, self.extra.to(self.base.dtype)])

    @property
    def num_embeddings(self) -> int:
        return self.base.shape[0] + self.extra.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


@dataclass
class ArrangerConfig:
    vocab_size: int  # the LM's tokens plus the arrangement tokens (from the codec it is trained with)
    lm: str = "lm-small"  # frozen piano LM: a folder under models/ (or a path)
    audio: str = "matcher"  # frozen audio encoder: the matcher folder whose audio tower reads references
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05

    def __post_init__(self) -> None:  # from JSON the Q-Former arrives as a dict
        if isinstance(self.qformer, dict):
            self.qformer = QFormerConfig(**self.qformer)


def frozen_base(name: str) -> nn.Module:
    """A shipped model (a folder under models/, or a path), frozen, in eval mode, a fresh copy the
    arranger may adapt (checkpoint.load_model's instances are shared and must stay as they are)."""
    from safetensors.torch import load_file  # registry imports pianoapp.models: imported at use

    from pianoapp.models import registry
    from pianoapp.models.checkpoint import WEIGHTS, load_config

    folder = constants.MODELS_DIR / name
    doc = load_config(folder)
    model = registry.build(registry.config_from_dict(doc["family"], doc["model"]))
    if not next(model.parameters()).is_meta:  # built on the meta device (shape checks): nothing to fill
        model.load_state_dict(load_file(folder / WEIGHTS))
    return model.requires_grad_(False).eval()


class Arranger(nn.Module):
    def __init__(self, config: ArrangerConfig):
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model  # peft imports transformers: seconds

        self.config = config
        lm = frozen_base(config.lm)
        if not isinstance(lm, PianoLM) or config.vocab_size <= lm.config.vocab_size:
            raise ValueError(f"{config.lm} is not a piano LM with fewer tokens than the arranger's "
                             f"{config.vocab_size}")
        self.audio = frozen_base(config.audio).audio_encoder
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(LORA_TARGETS))
        self.lm = inject_adapter_in_model(lora, lm)
        self.lm.tok_emb = ExtendedEmbedding(lm.tok_emb.weight, config.vocab_size - lm.config.vocab_size)
        d_lm = lm.config.d_model
        self.qformer = QFormer(config.qformer, d_audio=self.audio.config.d_model, d_tokens=d_lm)
        self.prefix_proj = nn.Linear(config.qformer.d_model, d_lm)
        # Start the prefix at the scale of the LM's token embeddings (lm-small's: rms 0.033), so it
        # does not swamp them.
        nn.init.normal_(self.prefix_proj.weight, std=TOKEN_RMS / config.qformer.d_model**0.5)
        nn.init.zeros_(self.prefix_proj.bias)
        self.null_prefix = nn.Parameter(torch.randn(config.qformer.n_queries, d_lm) * TOKEN_RMS)
        self._trained = {name for name, p in self.named_parameters() if p.requires_grad}
        # Saved too; a checkpoint from before the Q-Former had them loads without (the identity).
        self._statistics = {f"qformer.{name}" for name, _ in self.qformer.named_buffers()}

    @property
    def n_prefix(self) -> int:
        return self.config.qformer.n_queries

    def train(self, mode: bool = True) -> "Arranger":
        super().train(mode)
        self.audio.eval()  # frozen: its dropout stays off
        return self

    @torch.no_grad()
    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """Reference waveforms (B, REFERENCE_SAMPLES) at SAMPLE_RATE → audio frames (B, F, d_audio)."""
        return self.audio.frames(*self.audio.front_end(audio))[0]

    def prefix(self, frames: torch.Tensor | None, *, batch: int = 1,
               drop: torch.Tensor | None = None) -> torch.Tensor:
        """The LM's prefix (B, K, d_lm): the projected Q-Former outputs for `frames`, or the null
        prefix where there is no reference (`frames` None) or `drop` (B,) is True."""
        null = self.null_prefix.expand(batch if frames is None else frames.shape[0], -1, -1)
        if frames is None:
            return null
        style = self.prefix_proj(self.qformer(frames))
        return style if drop is None else torch.where(drop[:, None, None], null.to(style.dtype), style)

    def forward(self, ids: torch.Tensor, frames: torch.Tensor | None = None, *,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) of the token ids (B, T) after the reference's prefix."""
        logits, _ = self.lm(ids, prefix_embeds=self.prefix(frames, batch=ids.shape[0], drop=drop))
        return logits[:, self.n_prefix :]

    def merged_lm(self) -> PianoLM:
        """A plain PianoLM with the adapters merged into its projections and the new rows in its
        embedding: what sampling runs (and may quantise)."""
        from peft.tuners.lora import LoraLayer

        lm = copy.deepcopy(self.lm)
        for module in list(lm.modules()):
            for name, child in module.named_children():
                if isinstance(child, LoraLayer):
                    child.merge()
                    setattr(module, name, child.get_base_layer())
        lm.tok_emb = nn.Embedding.from_pretrained(self.lm.tok_emb.weight.detach().clone())
        lm.config = replace(lm.config, vocab_size=self.config.vocab_size)
        return lm.eval()

    # A checkpoint is what training changes (weights and the frame statistics); the frozen parts
    # come from their own folders.

    def state_dict(self, *args, **kwargs) -> dict:
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key in [k for k in state if k.removeprefix(prefix) not in self._trained | self._statistics]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        missing, unexpected = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in missing if k in self._trained]
        if strict and (missing or unexpected):
            raise RuntimeError(f"arranger weights do not fit: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
        return nn.modules.module._IncompatibleKeys(missing, unexpected)

    def num_params(self, *, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)


def reference_clip(audio: np.ndarray) -> np.ndarray:
    """The REFERENCE_SAMPLES of a mono recording the arranger reads: from its first sound (a frame
    within 40 dB of its peak), zero-padded when shorter."""
    frame = constants.SAMPLE_RATE // 100
    n = len(audio) // frame
    level = np.abs(audio[: n * frame]).reshape(n, frame).max(axis=1) if n else np.zeros(1)
    first = int(np.argmax(level >= level.max() * 0.01)) * frame if level.max() > 0 else 0
    clip = np.zeros(REFERENCE_SAMPLES, dtype=np.float32)
    part = audio[first : first + REFERENCE_SAMPLES]
    clip[: len(part)] = part
    return clip
