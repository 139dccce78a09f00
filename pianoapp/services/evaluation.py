"""`pianoapp eval TARGET`: the held-out evaluation of each shipped model, as a JSON-ready dict."""

from pathlib import Path

from pianoapp import constants
from pianoapp.errors import BadInputError, NotAvailableError

DEFAULT_MODEL = {"lm": "lm-small", "matcher": "matcher", "search": "bind", "arranger": "arranger"}


def evaluate(
    target: str, *, model_dir: str | Path | None = None, data_dir: str | Path | None = None,
    split: str = "test", seed: int = 0, prompts: int = 20,
) -> dict:
    """`prompts`: for the LM, how many held-out prompts to continue and compare (0 skips that part)."""
    if prompts < 0:
        raise BadInputError(f"--prompts must be 0 or more, got {prompts}.")
    model_dir = Path(model_dir) if model_dir else constants.MODELS_DIR / DEFAULT_MODEL[target]
    if not (model_dir / "model.safetensors").is_file():
        if model_dir.exists() or target == "lm":
            raise BadInputError(f"{model_dir} holds no model.safetensors; train one with `pianoapp train`.")
        raise NotAvailableError(f"Evaluating the {target} is not available yet: no trained model at {model_dir}.")
    data_dir = Path(data_dir) if data_dir else constants.DEFAULT_DATA_DIR
    if not data_dir.is_dir():
        raise BadInputError(f"Data folder {data_dir} does not exist; pass --data DIR.")
    if target == "lm":
        from pianoapp.evaluate.continuation import evaluate_continuations
        from pianoapp.evaluate.lm import evaluate_lm

        report = evaluate_lm(model_dir, data_dir=data_dir, split=split, seed=seed)
        if prompts:
            report["continuation"] = evaluate_continuations(model_dir, data_dir=data_dir, split=split,
                                                            n_prompts=prompts, seed=seed)
        return report
    if target == "matcher":
        from pianoapp.evaluate.matcher import evaluate_matcher, robustness
        from pianoapp.evaluate.matching import evaluate_matching
        from pianoapp.models.checkpoint import load_model

        return {
            "protocol": evaluate_matcher(model_dir, data_dir=data_dir, split=split, seed=seed),
            "robustness": robustness(model_dir, data_dir=data_dir, split=split, seed=seed),
            "matching": evaluate_matching(load_model(model_dir), data_dir=data_dir, split=split, seed=seed),
        }
    if target == "search":
        from pianoapp.evaluate.search import evaluate_search

        return evaluate_search(model_dir, data_dir=data_dir, split=split, seed=seed)
    if target == "arranger":
        from pianoapp.services.arrange import evaluate_arranger

        return evaluate_arranger(model_dir, data_dir=data_dir, split=split, seed=seed)
    raise NotAvailableError(f"Evaluating the {target} is not available yet.")
