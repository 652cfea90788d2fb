#!/usr/bin/env bash
# Issue 19, item 4: does the needle mixture teach the tiny Transformer S-NIAH-1 at its training length (T = 512)?
# Two arms of needle.yaml, one after another on one thread: needles (rate 0.5, every token of a needle document a
# target) and the 0% control; each then S-NIAH-1 at 512 (20 samples, random depths, 95% Wilson intervals); then the
# paired answer-loss test of answer_loss.py. Outputs under runs/helper-needle/ (override with OUT=...); 6.5-11 min
# wall per arm on the loaded 2-core machine.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/helper-needle}
STEPS=${STEPS:-600}
CONFIG=docs/results/recall/needle-T512/needle.yaml
arm() {  # name, then --set overrides
  local name=$1; shift
  tttlm train --config "$CONFIG" --set name="$name" --set out_dir="$OUT/$name" --set train.steps="$STEPS" "$@"
  tttlm eval niah --ckpt "$OUT/$name" --tasks s-niah-1 --lengths 512 --samples 20 --threads 1
}
arm needle-all --set data.needle_mixture.targets=all
arm control --set data.needle_mixture.rate=0
# arm needle-answer --set data.needle_mixture.targets=answer   # the default targets; stopped at its start (budget)
python docs/results/recall/needle-T512/answer_loss.py "$OUT/needle-all" "$OUT/control"
