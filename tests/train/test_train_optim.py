"""Weight decay: on every parameter by default (the papers' trainers), on weight matrices only with
``optim.decay: matrices`` (ours: not on embeddings, norms, biases, TTT's b1 and inner norm included)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tttlm.models import TTTConfig, TTTForCausalLM
from tttlm.train.config import ConfigError, OptimConfig, config_from_dict, trajectory_of
from tttlm.train.optim import build_optimizer, split_decay


def _ttt(layer_type: str) -> TTTForCausalLM:
    config = TTTConfig.from_preset("tiny", layer_type=layer_type, hidden_size=16, intermediate_size=32,
                                   num_attention_heads=2, num_hidden_layers=1)  # fmt: skip
    return TTTForCausalLM(config)


def test_ttt_linear_groups() -> None:
    decay, skip = split_decay(_ttt("linear"), decay="matrices")
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
    decay, skip = split_decay(_ttt("mlp"), decay="matrices")
    assert {"model.layers.0.ttt.W1", "model.layers.0.ttt.W2"} <= set(decay)
    assert {"model.layers.0.ttt.b1", "model.layers.0.ttt.b2"} <= set(skip)


def test_marked_parameters_and_groups() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight._no_weight_decay = True  # as Mamba marks A_log and D
    decay, skip = split_decay(model, decay="matrices")
    assert decay == ["0.weight"]
    assert skip == ["0.bias", "1.weight", "1.bias"]
    assert split_decay(model) == (["0.weight", "0.bias", "1.bias"], ["1.weight"])  # "all": only the mark counts
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.1, betas=(0.9, 0.95), decay="matrices"))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert isinstance(optimizer, torch.optim.AdamW)


def test_default_decays_every_parameter() -> None:
    """ttt-lm-jax (no exclusions), the TTT-E2E release (emb_wd: true) and flame decay every parameter."""
    model = _ttt("linear")
    decay, skip = split_decay(model, OptimConfig().no_decay, OptimConfig().decay)
    assert skip == []
    assert set(decay) == {name for name, _ in model.named_parameters()}
    assert "model.embed_tokens.weight" in decay
    decay, skip = split_decay(model, ["norm"])  # extra patterns still exempt
    assert skip
    assert all("norm" in name for name in skip)


def test_decay_rule_config() -> None:
    with pytest.raises(ConfigError, match=r"optim.decay must be all .* or matrices"):
        config_from_dict({"optim": {"decay": "some"}})
    assert config_from_dict({"optim": {"decay": "matrices"}}).optim.decay == "matrices"
    # a config saved before the key existed was trained under our rule
    old = config_from_dict({}).to_dict()
    del old["optim"]["decay"]
    assert trajectory_of(old)["optim"]["decay"] == "matrices"
