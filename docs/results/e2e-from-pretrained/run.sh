#!/usr/bin/env bash
# TTT-E2E from a pretrained Transformer at CPU scale (issue 21), 3 seeds. Per seed:
#   tf       a tiny full-attention Transformer (LlamaForCausalLM) pre-trained at 512 tokens, 60 x 8192 tokens
#   swa      tttlm e2e-init of it with inner lr 0: the source with sliding-window attention (k = 64) only
#   dyn      tttlm e2e-init with inner lr 1 and no meta-learning: dynamic evaluation of the last block's MLP
#   meta     dyn meta-learned for 10 x 8192 tokens at 1024 (the release's recipe: configs/e2e-from-pretrained.yaml)
#   scratch  TTT-E2E of the same shape trained from scratch for the same total tokens (70 x 8192 at 512)
# then the loss at each of the first 1024 positions of 8 held-out documents (16x the window).
#   PARALLEL=1 bash docs/results/e2e-from-pretrained/run.sh && python docs/results/e2e-from-pretrained/summarize.py
set -euo pipefail
OUT=${OUT:-runs/e2e-from-pretrained}
SEEDS=${SEEDS:-"0 1 2"}
common=(--config configs/long-context.yaml --resume --no-progress --set data.seq_len=512 --set train.micro_batch_size=16
        --set eval.every=0 --set checkpoint.every=0)
seed_chain() {  # every arm of one seed, then its evaluations
  local seed=$1 d=$OUT/seed$1
  tttlm train "${common[@]}" --set seed="$seed" --set model.arch=transformer --set train.steps=60 \
    --set optim.warmup_steps=6 --set name=tf --set out_dir="$d/tf"
  [ -d "$d/swa" ] || tttlm e2e-init --from "$d/tf/model" "$d/swa" --window 64 --mini-batch 8 --inner-lr 0
  [ -d "$d/dyn" ] || tttlm e2e-init --from "$d/tf/model" "$d/dyn" --window 64 --mini-batch 8 --inner-lr 1
  tttlm train --config configs/e2e-from-pretrained.yaml --resume --no-progress --init-from "$d/dyn" \
    --set seed="$seed" --set train.steps=10 --set optim.warmup_steps=1 --set eval.every=0 --set checkpoint.every=0 \
    --set name=meta --set out_dir="$d/meta"
  tttlm train "${common[@]}" --set seed="$seed" --set model.arch=ttt-e2e --set train.steps=70 \
    --set optim.warmup_steps=7 --set name=scratch --set out_dir="$d/scratch"
  for arm in tf swa dyn meta scratch; do
    ckpt=$d/$arm; [ -d "$ckpt/model" ] && ckpt=$ckpt/model
    [ -f "$d/eval-$arm/by_position.csv" ] || tttlm eval by-position --ckpt "$ckpt" --length 1024 --max-docs 8 \
      --threads 1 --out "$d/eval-$arm"
  done
}
# PARALLEL=1: the seeds' chains side by side (each is sequential; the results do not depend on it)
for seed in $SEEDS; do
  if [ "${PARALLEL:-0}" = 1 ]; then seed_chain "$seed" & else seed_chain "$seed"; fi
done
wait
