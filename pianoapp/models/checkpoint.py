"""Shipped checkpoints: `model.safetensors` (fp16) + `config.json` in one folder; loading needs nothing else.

config.json = {"family", "model": <config dataclass fields>, "pianoapp_version", **extra}, where
extra carries what the model is used with (the LM stores its tokenizer's `to_dict()` under "tokenizer").
"""

import dataclasses
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import pianoapp
from pianoapp.errors import CorruptFileError, NotAvailableError, brief
from pianoapp.io.files import write_atomic
from pianoapp.models import registry

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_model(model: nn.Module, out_dir: str | os.PathLike, *, config, extra: dict) -> Path:
    """Write fp16 weights and config.json into out_dir (each file replaced atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.to(torch.float16) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    doc = {
        "family": registry.family_of_config(config),
        "model": dataclasses.asdict(config),
        "pianoapp_version": pianoapp.__version__,
        **extra,
    }
    write_atomic(out_dir / WEIGHTS, lambda path: save_file(tensors, path))
    write_atomic(out_dir / CONFIG, lambda path: Path(path).write_text(json.dumps(doc, indent=1) + "\n"))
    return out_dir


def load_config(model_dir: str | os.PathLike) -> dict:
    """The checkpoint's config.json as a dict."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG
    if not path.is_file():
        raise NotAvailableError(f"No model in {model_dir}: {CONFIG} is missing; train it or point to a model folder.")
    try:
        doc = json.loads(path.read_text())
        doc["family"], doc["model"]
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{path} is not a Pianoapp model config ({err}); retrain or re-download it.") from err
    return doc


def load_model(model_dir: str | os.PathLike, *, device: str | None = None) -> nn.Module:
    """The model in eval mode, on the GPU if there is one, else the CPU. Cached per folder and
    weights file version: callers share one instance and must not modify it."""
    model_dir = Path(model_dir).resolve()
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise NotAvailableError(f"No model in {model_dir}: {WEIGHTS} is missing; train it first.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return _load(str(model_dir), weights.stat().st_mtime_ns, device)


@lru_cache(maxsize=8)
def _load(model_dir: str, mtime_ns: int, device: str) -> nn.Module:
    doc = load_config(model_dir)
    try:
        model = registry.build(registry.config_from_dict(doc["family"], doc["model"]))
        model.load_state_dict(load_file(Path(model_dir) / WEIGHTS))  # fp16 values are copied into fp32 params
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as err:
        raise CorruptFileError(
            f"The model in {model_dir} is damaged or does not match its config.json ({brief(err)}); "
            "retrain or re-download it."
        ) from err
    return model.to(device).eval()
