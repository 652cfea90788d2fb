#!/usr/bin/env bash
# Reproduces docs/results/long-context: trains tiny models of seven archs on the same budget (configs/long-context.yaml)
# and runs the evaluation suite on them. Re-running continues interrupted runs (--resume) and redoes the evals.
#   bash docs/results/long-context/run.sh            # all archs
#   ARCHS="ttt-linear transformer" bash docs/results/long-context/run.sh
set -euo pipefail
OUT=${OUT:-runs/long-context}
ARCHS=${ARCHS:-"transformer ttt-linear ttt-mlp mamba swa ttt-kvb ttt-e2e"}
RESULTS=${RESULTS:-docs/results/long-context}

for arch in $ARCHS; do
  tttlm train --config configs/long-context.yaml --resume --no-progress \
    --set model.arch="$arch" --set name="lc-$arch" --set out_dir="$OUT/$arch"
done
for arch in $ARCHS; do
  tttlm eval ppl --ckpt "$OUT/$arch" --contexts 256,1024,4096 --max-docs 8 --threads 1
  tttlm eval by-position --ckpt "$OUT/$arch" --length 4096 --max-docs 8 --threads 1
  tttlm eval niah --ckpt "$OUT/$arch" --lengths 512,1024 --samples 20 --threads 1
done
runs=()
for arch in $ARCHS; do runs+=("$OUT/$arch"); done
# --ref: the second paper's view, loss by token index minus full attention's
tttlm compare "${runs[@]}" --ref "$OUT/transformer" --out "$RESULTS"
