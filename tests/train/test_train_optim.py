"""Weight decay: on weight matrices only; not on embeddings, norms, biases (TTT's b1 and inner norm included)."""

from __future__ import annotations

import torch
from torch import nn

from tttlm.models import TTTConfig, TTTForCausalLM
from tttlm.train.config import OptimConfig
from tttlm.train.optim import build_optimizer, split_decay


def _ttt(layer_type: str) -> TTTForCausalLM:
    config = TTTConfig.from_preset("tiny", layer_type=layer_type, hidden_size=16, intermediate_size=32,
                                   num_attention_heads=2, num_hidden_layers=1)  # fmt: skip
    return TTTForCausalLM(config)


def test_ttt_linear_groups() -> None:
    decay, skip = split_decay(_ttt("linear"), OptimConfig().no_decay)
    block = "model.layers.0"
    assert {
        f"{block}.ttt.W1",
        f"{block}.ttt.q_proj.weight",
        f"{block}.ttt.lr_weight",
        f"{block}.mlp.up_proj.weight",
    } <= set(decay)
    assert {
        "model.embed_tokens.weight",  # the embedding, and the LM head tied to it
        "model.norm.weight",
        f"{block}.seq_norm.weight",
        f"{block}.ttt.b1",  # (heads, dim): a bias despite being 2-D
        f"{block}.ttt.ttt_norm_weight",  # TTT's inner LayerNorm, (heads, dim)
        f"{block}.ttt.ttt_norm_bias",
        f"{block}.ttt.lr_bias",
        f"{block}.ttt.token_offset",
        f"{block}.ttt.post_norm.weight",
    } <= set(skip)
    assert "lm_head.weight" not in decay + skip  # tied: listed once, under the embedding's name


def test_ttt_mlp_inner_biases_skip_decay() -> None:
    decay, skip = split_decay(_ttt("mlp"), OptimConfig().no_decay)
    assert {"model.layers.0.ttt.W1", "model.layers.0.ttt.W2"} <= set(decay)
    assert {"model.layers.0.ttt.b1", "model.layers.0.ttt.b2"} <= set(skip)


def test_marked_parameters_and_groups() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight._no_weight_decay = True  # as Mamba marks A_log and D
    decay, skip = split_decay(model, OptimConfig().no_decay)
    assert decay == ["0.weight"]
    assert skip == ["0.bias", "1.weight", "1.bias"]
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.1, betas=(0.9, 0.95)))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert isinstance(optimizer, torch.optim.AdamW)
