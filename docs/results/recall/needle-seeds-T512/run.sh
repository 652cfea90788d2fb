#!/usr/bin/env bash
# Issue 19, item 4: S-NIAH-1 over 3 seeds, the tiny full-attention model against SWA (window 64) at T = 512, both with
# needle.yaml's recipe (90% needle documents, short conv, 3,000 steps, one thread each; ~30 min per run on the shared
# 2-core machine, the two archs of a seed side by side). After each run: S-NIAH-1 at 512 (the training length) and
# 1024 (twice it), 20 samples each, and the paired answer-loss test of ../needle-T512/answer_loss.py.
# Outputs under runs/needle-seeds-T512/ (override with OUT=...); summary.py pools them into summary.{json,md}.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/needle-seeds-T512}
HERE=docs/results/recall/needle-seeds-T512
one() {  # arch, seed
  local dir="$OUT/$1-$2"
  tttlm train --config $HERE/needle.yaml --set model.arch="$1" --set seed="$2" --set out_dir="$dir" --no-progress \
    $([ -d "$dir" ] && echo --resume) > "$dir.log" 2>&1
  tttlm eval niah --ckpt "$dir" --tasks s-niah-1 --lengths 512,1024 --samples 20 --threads 1 --out "$dir/eval" \
    >> "$dir.log" 2>&1
  python docs/results/recall/needle-T512/answer_loss.py "$dir" >> "$dir.log" 2>&1
}
mkdir -p "$OUT"
for seed in ${SEEDS:-0 1 2}; do
  one full-attention "$seed" & one swa "$seed" & wait
done
python $HERE/summary.py "$OUT" $HERE/results
