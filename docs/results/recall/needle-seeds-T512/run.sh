#!/usr/bin/env bash
# Issue 19, item 4: S-NIAH-1 over 3 seeds at T = 512, the tiny full-attention model against SWA with window 256
# (T/2, so that about half of the needles are within one window of the question), both with needle.yaml's recipe
# (90% needle documents, short conv, 3,000 steps, one thread each; ~30 min per run on the shared 2-core machine, two
# at a time). After each run: S-NIAH-1 at 512 (the training length) and 1024 (twice it), 20 samples each at random
# depths, the same at fixed depths 1.0 / 0.9 / ... / 0 (10 samples each), and the paired answer-loss test of
# ../needle-T512/answer_loss.py. Outputs under runs/needle-seeds-T512/<name>-<seed>/ (override with OUT=...);
# summary.py pools them into results/summary.{json,md} and results/by_distance.png.
# SWA with the tiny preset's window 64 (seed 0 only: `RUNS="swa-w64:swa:64" SEEDS=0`) ran first and did not learn
# the task: every training needle sits >= 80 tokens before the answer, beyond its window.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/needle-seeds-T512}
HERE=docs/results/recall/needle-seeds-T512
one() {  # name:arch:window, seed
  IFS=: read -r name arch window <<< "$1"
  local dir="$OUT/$name-$2"
  local extra=()
  [ -n "$window" ] && extra+=(--set "model.overrides.sliding_window=$window")
  [ -d "$dir" ] && extra+=(--resume)
  tttlm train --config $HERE/needle.yaml --set model.arch="$arch" --set seed="$2" --set out_dir="$dir" \
    --no-progress "${extra[@]}" >> "$dir.log" 2>&1
  tttlm eval niah --ckpt "$dir" --tasks s-niah-1 --lengths 512,1024 --samples 20 --threads 1 --out "$dir/eval" \
    >> "$dir.log" 2>&1
  tttlm eval niah --ckpt "$dir" --tasks s-niah-1 --lengths 512 --depths 1,0.9,0.8,0.7,0.6,0.4,0.2,0 --samples 10 \
    --threads 1 --out "$dir/eval-depths" >> "$dir.log" 2>&1
  python docs/results/recall/needle-T512/answer_loss.py "$dir" >> "$dir.log" 2>&1
}
export -f one
export OUT HERE
mkdir -p "$OUT"
for seed in ${SEEDS:-0 1 2}; do
  for run in ${RUNS:-full-attention:full-attention: swa-w256:swa:256}; do echo "$run $seed"; done
done | xargs -P "${JOBS:-2}" -L 1 bash -c 'one "$0" "$1"'
python $HERE/summary.py "$OUT" $HERE/results
