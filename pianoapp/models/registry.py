"""Named model configs: one JSON per name in `configs/`, each naming its family.

A family is a (config dataclass, module class) pair registered in `pianoapp.models.FAMILIES`;
a JSON holds `family`, `description`, `model` (the dataclass fields) and `train` (the trainer's
defaults for this size). This module is the only factory for models.
"""

import json
from functools import cache
from importlib import resources

from torch import nn

from pianoapp.errors import BadInputError
from pianoapp.models import FAMILIES


@cache
def _specs() -> dict[str, dict]:
    folder = resources.files("pianoapp.models") / "configs"
    specs = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            specs[entry.name.removesuffix(".json")] = json.loads(entry.read_text())
    return specs


def list_configs(family: str | None = None) -> list[str]:
    return [name for name, spec in _specs().items() if family is None or spec["family"] == family]


def _spec(name: str) -> dict:
    try:
        return _specs()[name]
    except KeyError:
        choices = ", ".join(list_configs())
        raise BadInputError(f"There is no model config named {name!r}; choose one of {choices}.") from None


def family_of(name: str) -> str:
    return _spec(name)["family"]


def config_from_dict(family: str, fields: dict):
    """The family's config dataclass from plain fields (as stored in a checkpoint's config.json)."""
    config_cls, _ = FAMILIES[family]
    return config_cls(**fields)


def get_config(name: str, **overrides):
    """The model config dataclass of a named config, with some fields replaced (e.g. vocab_size)."""
    spec = _spec(name)
    return config_from_dict(spec["family"], {**spec["model"], **overrides})


def train_defaults(name: str) -> dict:
    """The trainer settings this size is meant to run with (TrainConfig fields)."""
    return dict(_spec(name).get("train", {}))


def family_of_config(config) -> str:
    for family, (config_cls, _) in FAMILIES.items():
        if type(config) is config_cls:
            return family
    raise TypeError(f"{type(config).__name__} is not a registered model config")


def build(config) -> nn.Module:
    """A freshly initialised module for a config dataclass of any registered family."""
    _, module_cls = FAMILIES[family_of_config(config)]
    return module_cls(config)


def build_model(name: str, **overrides) -> nn.Module:
    return build(get_config(name, **overrides))
