#!/usr/bin/env bash
# The evaluation suite on the two models `tttlm demo` trains (runs/demo: tiny ttt-linear and transformer, 1M tokens
# of 256-token windows); writes docs/results/demo-eval/report.md with its plots.
set -euo pipefail
DEMO=${DEMO:-runs/demo}
RESULTS=${RESULTS:-docs/results/demo-eval}
for arch in ttt-linear transformer; do
  tttlm eval ppl --ckpt "$DEMO/$arch" --contexts 128,256,1024,4096 --max-docs 8 --threads 1
  tttlm eval by-position --ckpt "$DEMO/$arch" --length 4096 --max-docs 8 --threads 1
  tttlm eval niah --ckpt "$DEMO/$arch" --lengths 256,512,1024 --depths 5 --threads 1
done
tttlm compare "$DEMO/ttt-linear" "$DEMO/transformer" --ref "$DEMO/transformer" --out "$RESULTS"
