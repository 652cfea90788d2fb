#!/usr/bin/env bash
# Issue 19, item 4: does the tiny full-attention model learn S-NIAH-1 at its training length (T = 512) from needle
# documents? needle.yaml (90% needle documents, the answer's tokens as targets), one seed, one thread, in the order it
# ran on 2026-12-04 (≈ 13 min per 1,500 steps on the shared 2-core machine):
#   1. no short conv, 1,500 steps;  2. short conv before the mixers, 1,500 steps;  3. run 2 continued to 3,000 steps
#   (--resume --allow-config-change: the cosine schedule is re-stretched from step 1,500, so step 3 is not the run a
#   3,000-step config would give). After each: S-NIAH-1 at 512 (20 samples, 95% Wilson) and the paired answer-loss
#   test of ../needle-T512/answer_loss.py. Outputs under runs/needle-conv-T512/ (override with OUT=...).
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/needle-conv-T512}
HERE=docs/results/recall/needle-conv-T512
check() {  # run dir, results name
  tttlm eval niah --ckpt "$1" --tasks s-niah-1 --lengths 512 --samples 20 --threads 1 --out "$1/eval-$2"
  python docs/results/recall/needle-T512/answer_loss.py "$1"
}
tttlm train --config $HERE/needle.yaml --set out_dir="$OUT/no-conv"
check "$OUT/no-conv" 1500
tttlm train --config $HERE/needle.yaml --set out_dir="$OUT/conv" --set model.overrides.short_conv=true
check "$OUT/conv" 1500
tttlm train --config $HERE/needle.yaml --set out_dir="$OUT/conv" --set model.overrides.short_conv=true \
  --set train.steps=3000 --resume --allow-config-change
check "$OUT/conv" 3000
