"""The small float64 TTT-E2E of the remat and outer-loss tests: 4 blocks, the top 2 updated, learnable step sizes,
mini-batches of 4, so a 23-token input has 5 whole mini-batches and an open one and every inner-loop path (step,
open mini-batch, step on a completed open one) is exercised."""

from __future__ import annotations

import torch

from tttlm.models import E2EForCausalLM, build

SMALL_E2E = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "num_hidden_layers": 4,
    "intermediate_size": 24,
    "updated_fraction": 0.5,
    "sliding_window": 5,
    "attention_block_size": 4,
    "mini_batch_size": 4,
    "inner_lr": 0.5,
    "inner_lr_learnable": True,
    "initializer_range": 0.2,
}


def small_e2e(**overrides: object) -> E2EForCausalLM:
    """``SMALL_E2E`` with ``overrides``, seeded, in float64 and training mode."""
    torch.manual_seed(0)
    return build("ttt-e2e", "tiny", match_params=False, **{**SMALL_E2E, **overrides}).double().train()
