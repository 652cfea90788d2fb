#!/usr/bin/env bash
# Our TTT layer at two commits, timed as `tttlm bench reference` times it (125m shape, T 2048, 1 thread, CPU time,
# best of 3 calls after a warm-up, fresh process per measurement, the two commits alternating), for the
# before/after table of docs/results/bench/notes/reference.md.
#   bash docs/results/bench/layer-before-after.sh BEFORE AFTER [ROUNDS]
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/before"; git worktree remove --force "$work/after"; rm -rf "$work"' EXIT
git worktree add -q "$work/before" "$before"
git worktree add -q "$work/after" "$after"
time_layer='
import sys, time, torch
torch.set_num_threads(1)
torch.manual_seed(0)
from tttlm.layers.ttt import TTTLayer
inner, mode = sys.argv[1], sys.argv[2]
layer = TTTLayer(768, 12, inner, use_gate=False)
x = torch.randn(1, 2048, 768, requires_grad=mode == "backward")
best = []
for _ in range(4):
    start = time.thread_time()
    if mode == "forward":
        with torch.no_grad():
            layer(x)
    else:
        layer(x)[0].sum().backward()
    best.append(time.thread_time() - start)
print(f"{1000 * min(best[1:]):.1f}")
'
echo "round inner mode side ms"
for round in $(seq "$rounds"); do
  for inner in linear mlp; do
    for mode in forward backward; do
      for side in before after; do
        echo "$round $inner $mode $side $(cd /tmp && PYTHONPATH="$work/$side" python -c "$time_layer" "$inner" "$mode")"
      done
    done
  done
done
