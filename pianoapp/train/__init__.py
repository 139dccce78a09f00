"""Training: one trainer (`trainer.py`) and a recipe per model family. `run` is the door the CLI uses."""

from pathlib import Path

from pianoapp import constants
from pianoapp.errors import BadInputError, NotAvailableError

RECIPES = ("matcher", "bind", "lm", "arranger")
TRAINABLE = ("lm", "matcher", "arranger", "bind")
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

    Defaults: out_dir = models/<recipe>-<config>; run_dir = out_dir itself when that lies under runs/
    (e.g. one ablation arm per budget), else runs/<out_dir's name>. `overrides`
    replaces training-config fields, the recipe's own included, e.g. {"max_steps": 20, "loss": "infonce"}.
    """
    if recipe not in RECIPES:
        raise BadInputError(f"There is no {recipe!r} recipe; choose one of {', '.join(RECIPES)}.")
    if recipe not in TRAINABLE:
        raise NotAvailableError(
            f"Training the {recipe} is not available yet; only {' and '.join(map(repr, TRAINABLE))} can be trained so far."
        )
    if config not in SIZES:
        raise BadInputError(f"There is no {config!r} size; choose one of {', '.join(SIZES)}.")

    from pianoapp.models.registry import train_defaults  # torch: imported only when training
    from pianoapp.train.trainer import apply_overrides, train

    recipe_cls, config_cls = recipe_classes(recipe)
    name = f"{recipe}-{config}"
    train_config = apply_overrides(config_cls(**train_defaults(name)), overrides)
    out_dir = Path(out_dir) if out_dir else constants.MODELS_DIR / name
    if run_dir is None:
        inside_runs = out_dir.resolve().is_relative_to(RUNS_DIR.resolve())
        run_dir = out_dir if inside_runs else RUNS_DIR / out_dir.name
    chosen = recipe_cls(name, train_config, data_dir=Path(data_dir) if data_dir else constants.DEFAULT_DATA_DIR)
    return train(chosen, train_config, out_dir=out_dir, run_dir=Path(run_dir), command=command)


def recipe_classes(recipe: str) -> tuple[type, type]:
    """A TRAINABLE recipe's class and its training-config class (TrainConfig or a subclass adding the
    recipe's own settings); imported here so that only the chosen recipe's dependencies load."""
    if recipe == "lm":
        from pianoapp.train.lm import LMRecipe
        from pianoapp.train.trainer import TrainConfig

        return LMRecipe, TrainConfig
    if recipe == "arranger":
        from pianoapp.train.arranger import ArrangerRecipe, ArrangerTrainConfig

        return ArrangerRecipe, ArrangerTrainConfig
    if recipe == "bind":
        from pianoapp.train.bind import BindRecipe, BindTrainConfig

        return BindRecipe, BindTrainConfig
    from pianoapp.train.matcher import MatcherRecipe, MatcherTrainConfig

    return MatcherRecipe, MatcherTrainConfig
