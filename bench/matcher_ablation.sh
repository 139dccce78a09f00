#!/usr/bin/env bash
# The seed's descriptor ablation: D0, a4, d4 and d4a4 matchers trained with the same budget and data,
# then evaluated with the seed protocol. Re-running resumes unfinished arms and skips finished ones.
# Usage: bash bench/matcher_ablation.sh [STEPS]   (default 500; about 20 min per arm on one core)
set -euo pipefail
steps=${1:-500}
py=${PYTHON:-.venv/bin/python}
for arm in D0 d4a4 a4 d4; do
  case $arm in
    D0) a4=false d4=false ;; a4) a4=true d4=false ;; d4) a4=false d4=true ;; d4a4) a4=true d4=true ;;
  esac
  out=runs/ablation-$steps/matcher-$arm
  if [ ! -f "$out/model.safetensors" ]; then
    OMP_NUM_THREADS=1 "$py" -m pianoapp.cli train matcher --config small --out "$out" --set max_items=800 \
      --set render_seconds=20 --set max_steps="$steps" --set use_a4=$a4 --set use_d4=$d4
  fi
done
# The seed protocol only (test split, FluidR3_GM and the held-out TimGM6mb); `pianoapp eval matcher`
# adds robustness and whole-piece matching for the shipped model.
OMP_NUM_THREADS=1 "$py" - "$steps" <<'PY'
import sys
from pianoapp.evaluate.matcher import evaluate_matcher
print("| arm | S (FluidR3_GM) | R@1 a→m | S (TimGM6mb, unseen) |")
print("|---|---|---|---|")
for arm in ("D0", "a4", "d4", "d4a4"):
    model = f"runs/ablation-{sys.argv[1]}/matcher-{arm}"
    seen, unseen = evaluate_matcher(model), evaluate_matcher(model, soundfont="TimGM6mb")
    r1 = seen["audio_to_midi"]["R@1"]
    print(f"| {arm} | {seen['S']['mean']:.3f} ± {seen['S']['std']:.3f} | {r1['mean']:.3f} ± {r1['std']:.3f} "
          f"| {unseen['S']['mean']:.3f} ± {unseen['S']['std']:.3f} |", flush=True)
PY
