"""Does an arranger's reference reach its LM? The spread of the Q-Former's output and of the prefix
across different references; near 0 means every reference gives the same prefix (the collapse in
models/arranger/MODEL_CARD.md).

    python bench/arranger_reference_spread.py [--references 64] MODEL_DIR...

References: the PIANO tracks of the first segment of `--references` POP909 test songs, their first
10 s rendered clean as in training. Spread: the per-unit standard deviation across references,
averaged, over the root mean square (0: identical outputs; the frames themselves about 0.25).
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from pianoapp.data.arrangement import ArrangementPairs, load_songs
from pianoapp.models.checkpoint import load_model
from pianoapp.train.arranger import reference_audio, render_references


def spread(x: torch.Tensor) -> float:
    x = x.flatten(1).float()
    return float(x.std(0).mean() / x.pow(2).mean().sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--references", type=int, default=64)
    args = parser.parse_args()
    pairs = ArrangementPairs(load_songs("test"))
    firsts = pairs.first_segments()[: args.references]
    renders = render_references(pairs, set(firsts))
    audio = torch.stack([torch.as_tensor(reference_audio(renders[j])) for j in firsts])
    for folder in args.models:
        model = load_model(folder, device="cpu").eval()
        with torch.inference_mode():
            frames = model.frames(audio)
            out, prefix = model.qformer(frames), model.prefix(frames, batch=len(frames))
        print(f"{folder}: {len(firsts)} references; spread of the frames {spread(frames):.3f}, "
              f"of the Q-Former's output {spread(out):.4f}, of the prefix {spread(prefix):.4f}")


if __name__ == "__main__":
    main()
