"""How much can a reference's audio lower an arranger's loss? Held-out target NLL with the target
segment itself as the reference (the most a reference can say), with the segment's usual reference
(another segment of the same song) and with none; no style stated in any of them, so only what the
Q-Former reads from the audio counts.

    python bench/arranger_reference_gain.py MODEL_DIR...

Segments: the recipe's fixed held-out examples of the test split (`eval_windows` of the recipe's
default settings, 64; untransposed), their references rendered clean as in training. A model whose
prefix carries what its reference holds scores far lower with the target itself than with none.
"""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from pianoapp.models.checkpoint import load_model
from pianoapp.train.arranger import (
    ArrangerRecipe,
    ArrangerTrainConfig,
    _target_nll,
    _trimmed,
    reference_audio,
    render_references,
)

BATCH = 8


def main() -> None:
    recipe = ArrangerRecipe("arranger-small", ArrangerTrainConfig())
    items = recipe._fixed_examples("test")
    renders = render_references(recipe._pairs("test"), {item["segment"] for item in items})
    cpu = torch.device("cpu")
    for model_dir in sys.argv[1:]:
        arranger = load_model(model_dir, device="cpu").eval()
        totals = {"target itself": 0.0, "its reference": 0.0, "none": 0.0}
        with torch.no_grad():
            for start in range(0, len(items), BATCH):
                chunk = items[start:start + BATCH]
                ids, target = _trimmed(torch.stack([item["loss_noref"][0] for item in chunk]),
                                       torch.stack([item["loss_noref"][1] for item in chunk]),
                                       recipe.codec.tokenizer.pad_id)
                itself = np.stack([reference_audio(renders[item["segment"]]) for item in chunk])
                usual = np.stack([item["audio"] for item in chunk])
                with recipe._autocast(cpu):
                    for key, audio in (("target itself", itself), ("its reference", usual), ("none", None)):
                        frames = None if audio is None else arranger.frames(torch.from_numpy(audio))
                        totals[key] += float(_target_nll(arranger(ids[:, :-1], frames), ids, target)) * len(chunk)
        print(f"{model_dir}: {len(items)} test segments, target NLL (nats) "
              + ", ".join(f"{key} {total / len(items):.4f}" for key, total in totals.items()), flush=True)


if __name__ == "__main__":
    main()
