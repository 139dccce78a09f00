"""Training: one trainer (`trainer.py`) and a recipe per model family. `run` is the door the CLI uses."""

from pathlib import Path

from pianoapp import constants
from pianoapp.errors import BadInputError, NotAvailableError

RECIPES = ("matcher", "bind", "lm", "arranger")
SIZES = ("tiny", "small", "base")
RUNS_DIR = constants.REPO_ROOT / "runs"  # resume state and metrics logs; never shipped


def run(
    recipe: str,
    config: str = "tiny",
    *,
    data_dir: Path | None = None,
    out_dir: Path | None = None,
    overrides: dict | None = None,
    command: str = "",
    run_dir: Path | None = None,
) -> Path:
    """Train `<recipe>-<config>` (resuming if its run folder holds state) and return the model folder.

    Defaults: out_dir = models/<recipe>-<config>, run_dir = runs/<out_dir's name>. `overrides`
    replaces TrainConfig fields, e.g. {"max_steps": 20, "batch_size": 4}.
    """
    if recipe not in RECIPES:
        raise BadInputError(f"There is no {recipe!r} recipe; choose one of {', '.join(RECIPES)}.")
    if recipe != "lm":
        raise NotAvailableError(f"Training the {recipe} is not available yet; only 'lm' can be trained so far.")
    if config not in SIZES:
        raise BadInputError(f"There is no {config!r} size; choose one of {', '.join(SIZES)}.")

    from pianoapp.models.registry import train_defaults  # torch: imported only when training
    from pianoapp.train.lm import LMRecipe
    from pianoapp.train.trainer import TrainConfig, apply_overrides, train

    name = f"{recipe}-{config}"
    train_config = apply_overrides(TrainConfig(**train_defaults(name)), overrides)
    out_dir = Path(out_dir) if out_dir else constants.MODELS_DIR / name
    run_dir = Path(run_dir) if run_dir else RUNS_DIR / out_dir.name
    lm = LMRecipe(name, train_config, data_dir=Path(data_dir) if data_dir else constants.DEFAULT_DATA_DIR)
    return train(lm, train_config, out_dir=out_dir, run_dir=run_dir, command=command)
