"""What the app can show without running a model: the shipped checkpoints and their model cards."""

import json
import re
import struct
from datetime import datetime, timezone
from pathlib import Path

from pianoapp import constants


def list_models(models_dir: Path | None = None) -> list[dict]:
    """Each checkpoint folder (config.json + MODEL_CARD.md) as {name, family, params, metrics, date, path}."""
    models_dir = constants.MODELS_DIR if models_dir is None else Path(models_dir)
    if not models_dir.is_dir():
        return []
    models = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        config_path, card_path = folder / "config.json", folder / "MODEL_CARD.md"
        if not (config_path.is_file() and card_path.is_file()):
            continue
        try:
            config = json.loads(config_path.read_text())
        except ValueError:
            config = {}
        card = card_path.read_text(errors="replace")
        weights = folder / "model.safetensors"
        models.append({
            "name": folder.name,
            "family": config.get("family", "?"),
            "params": _count_params(weights) if weights.is_file() else None,
            "metrics": _card_metrics(card) or {k: str(v) for k, v in config.get("metrics", {}).items()},
            "date": _card_date(card) or _file_date(weights if weights.is_file() else config_path),
            "path": str(folder),
        })
    return models


def _count_params(weights: Path) -> int | None:
    """Parameter count from the safetensors header (8-byte length, then JSON with each tensor's shape):
    no tensors are loaded, and no torch import."""
    try:
        with open(weights, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError):
        return None
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for dim in info["shape"]:
                n *= dim
            total += n
    return total


def _card_metrics(card: str) -> dict[str, str]:
    """The metrics under the card's first heading that mentions them: `- name: value` bullets (what
    the trainer writes), or a Markdown table whose first column is the metric and whose other columns
    are joined with their header names (e.g. "2.31 · baseline 2.80")."""
    lines = card.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("#") and "metric" in line.lower()), None)
    if start is None:
        return {}
    section = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        section.append(line.strip())
    bullets = [line[2:].partition(":") for line in section if line.startswith("- ") and ":" in line]
    if bullets:
        return {name.strip(): value.strip() for name, _, value in bullets}
    rows = []
    for line in section:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break  # the table ended
    rows = [r for r in rows if not all(set(cell) <= set("-: ") for cell in r)]  # drop the |---| rule
    if len(rows) < 2:
        return {}
    header, body = rows[0], rows[1:]
    metrics = {}
    for row in body:
        values = [f"{value} ({name})" if i and name else value
                  for i, (name, value) in enumerate(zip(header[1:], row[1:], strict=False)) if value]
        metrics[row[0]] = " · ".join(values)
    return metrics


def _card_date(card: str) -> str | None:
    match = re.search(r"^\W*date\W*[:|]\s*\**\s*([0-9]{4}-[0-9]{2}-[0-9]{2})", card,
                      re.IGNORECASE | re.MULTILINE)
    return match.group(1) if match else None


def _file_date(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d")
