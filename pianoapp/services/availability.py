"""Which capabilities have the checkpoints they need, and the plain sentence to show when one does not."""

import json
from dataclasses import dataclass

from pianoapp import constants
from pianoapp.errors import NotAvailableError


@dataclass(frozen=True)
class Capability:
    name: str
    title: str
    models: tuple[str, ...]  # folders under models/ that must hold a model.safetensors
    issue: str  # what is being built, for the "not available yet" sentence
    service_built: bool = True  # False while the capability's service (beyond its model) is unwritten


CAPABILITIES = {
    c.name: c
    for c in (
        # Needs no checkpoint: without models/bind, MiniLM over metadata text answers (`library.ENGINE`).
        Capability("search", "Text search", (), "the text–audio–MIDI search model"),
        Capability("match", "Audio↔MIDI matching", ("matcher",), "the audio↔MIDI matcher"),
        Capability("continue", "Continuation", ("lm-small",), "the piano language model"),
        # The arranger's own folder holds only its trained parts; the LM and the audio encoder it reads
        # references with come from the folders its config.json names (`_frozen_bases`).
        Capability("arrange", "Arrangement", ("arranger",), "the style-reference arranger"),
        # The map draws whatever embeddings an index holds; CKA needs the matcher.
        Capability("explore", "Explore", ("matcher",), "the audio↔MIDI matcher"),
    )
}


def folders(name: str) -> tuple[str, ...]:
    """The folders under models/ a capability reads: its own, and the frozen bases an arranger names."""
    models = CAPABILITIES[name].models
    return models + (_frozen_bases() if "arranger" in models else ())


def missing_reason(name: str) -> str | None:
    """None when the capability can run; otherwise one sentence saying why not."""
    cap = CAPABILITIES[name]
    missing = [m for m in folders(name) if not (constants.MODELS_DIR / m / "model.safetensors").is_file()]
    if not missing:
        if cap.service_built:
            return None
        return f"{cap.title} is not available yet: its model is trained, the service that uses it is still being built."
    return (
        f"{cap.title} is not available yet: it needs {cap.issue}, not trained and shipped yet "
        f"(missing models/{', models/'.join(missing)})."
    )


def require(name: str) -> None:
    reason = missing_reason(name)
    if reason:
        raise NotAvailableError(reason)


def _frozen_bases() -> tuple[str, ...]:
    """The LM and audio-encoder folders the shipped arranger was trained on (its config.json names them)."""
    try:
        model = json.loads((constants.MODELS_DIR / "arranger" / "config.json").read_text())["model"]
        return model["lm"], model["audio"]
    except (OSError, ValueError, KeyError, TypeError):
        return ()  # no readable arranger: its own folder is what is reported missing
