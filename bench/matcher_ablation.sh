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
echo "| arm | S (FluidR3_GM, test) | R@1 a→m |"
echo "|---|---|---|"
for arm in D0 a4 d4 d4a4; do
  OMP_NUM_THREADS=1 "$py" -m pianoapp.cli eval matcher --model runs/ablation-$steps/matcher-$arm --json |
    "$py" -c "import json,sys; r=json.load(sys.stdin); a=r['audio_to_midi']['R@1']
print(f\"| $arm | {r['S']['mean']:.3f} ± {r['S']['std']:.3f} | {a['mean']:.3f} ± {a['std']:.3f} |\")"
done
