"""save_pretrained / from_pretrained (safetensors only), the Auto classes, and init of missing weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_testing import make_model, random_ids
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from tttlm import TTTConfig, TTTForCausalLM, TTTModel

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack")


def weight_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))


@pytest.mark.parametrize(
    "overrides",
    [
        {"layer_type": "linear", "backbone": "transformer"},
        {"layer_type": "mlp", "backbone": "mamba", "tie_word_embeddings": False, "use_gate": False},
    ],
    ids=["linear-transformer-tied", "mlp-mamba-untied"],
)
def test_round_trip_gives_identical_logits(tmp_path: Path, overrides: dict) -> None:
    model = make_model(torch.float32, **overrides)
    model.save_pretrained(tmp_path)
    assert weight_files(tmp_path) == ["model.safetensors"]  # never a pickle
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True).eval()
    assert type(loaded) is TTTForCausalLM
    assert loaded.dtype == torch.float32
    assert loaded.config.to_diff_dict() == model.config.to_diff_dict()
    tied = loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert tied == model.config.tie_word_embeddings
    for (name, p), (name2, p2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == name2
        assert torch.equal(p, p2), name
    ids = random_ids(2, 11)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_tied_head_is_stored_once(tmp_path: Path) -> None:
    make_model(torch.float32).save_pretrained(tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert "model.embed_tokens.weight" in keys
    assert "lm_head.weight" not in keys


def test_float64_round_trip_and_auto_model(tmp_path: Path) -> None:
    model = make_model(torch.float64, backbone="mamba")
    model.save_pretrained(tmp_path)
    loaded = TTTForCausalLM.from_pretrained(tmp_path, dtype="auto")  # "auto": the stored dtype (default in v5)
    assert loaded.dtype == torch.float64
    backbone = AutoModel.from_pretrained(tmp_path, dtype="auto")
    assert type(backbone) is TTTModel
    assert isinstance(AutoConfig.from_pretrained(tmp_path), TTTConfig)
    ids = random_ids(1, 9)
    with torch.no_grad():
        hidden = backbone(ids).last_hidden_state
        assert torch.equal(hidden, model.model(ids).last_hidden_state)
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_auto_classes_build_from_config() -> None:
    config = TTTConfig.from_preset("tiny")
    assert type(AutoModelForCausalLM.from_config(config)) is TTTForCausalLM
    assert type(AutoModel.from_config(config)) is TTTModel


def test_missing_weights_are_initialised_like_a_fresh_model(tmp_path: Path) -> None:
    """transformers initialises weights absent from a checkpoint with ``_init_weights``; the loaded ones stay."""
    config = TTTConfig.from_preset("tiny", layer_type="mlp", backbone="mamba", hidden_size=256, num_hidden_layers=1)
    model = TTTForCausalLM(config)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = {
        "model.layers.0.ttt.W1",  # N(0, 0.02)
        "model.layers.0.ttt.b1",  # 0
        "model.layers.0.ttt.lr_weight",  # N(0, 0.02)
        "model.layers.0.ttt.token_offset",  # 0
        "model.layers.0.ttt.ttt_norm_weight",  # 1
        "model.layers.0.ttt.conv_q.weight",  # U(±1/2)
        "model.layers.0.seq_norm.weight",  # 1
        "model.layers.0.ttt.qk_proj.weight",  # N(0, 0.02)
    }
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors", {"format": "pt"})

    loaded, info = TTTForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["missing_keys"]) == dropped
    params = dict(loaded.named_parameters())
    with torch.no_grad():
        for name in ("W1", "lr_weight", "qk_proj.weight"):
            std = float(params[f"model.layers.0.ttt.{name}"].std())
            assert 0.015 < std < 0.025, (name, std)
        for name in ("b1", "token_offset"):
            assert not params[f"model.layers.0.ttt.{name}"].any()
        assert bool((params["model.layers.0.ttt.ttt_norm_weight"] == 1).all())
        assert bool((params["model.layers.0.seq_norm.weight"] == 1).all())
        conv = params["model.layers.0.ttt.conv_q.weight"]
        assert float(conv.abs().max()) <= 0.5
        assert float(conv.std()) > 0.2
        for name, p in model.named_parameters():
            if name not in dropped:
                assert torch.equal(params[name], p), name
