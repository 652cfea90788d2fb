"""The inner-learning-rate warm-up: the TTT-E2E release's formula, the config key, the layer's scale, the loop."""

from __future__ import annotations

import pytest
import torch
from train_testing import tiny_config

from tttlm.layers.ttt import TTTLayer
from tttlm.models import build
from tttlm.models.inner_lr_scale import InnerLrScaled
from tttlm.train import ConfigError, train
from tttlm.train.inner_lr import InnerLrWarmup, WarmupError, inner_lr_multiplier, resolve_warmup


def _release(step: int, ilr_init: float, base: float, warmup_steps: int) -> float:
    """ttt/model/transformer.py get_ilr_multiplier of the TTT-E2E release, in plain Python."""
    progress = min(1.0, 1.0 * (step + 1) / warmup_steps)
    ilr = ilr_init + (base - ilr_init) * progress
    return ilr / base


@pytest.mark.parametrize("base", [0.1, 1.0, 3.0])
def test_multiplier_is_the_release_formula(base) -> None:
    for step in range(12):
        expected = _release(step, 0.1 * base, base, 8)
        assert inner_lr_multiplier(step, 0.1, 8) == pytest.approx(expected, abs=1e-15)


def test_multiplier_endpoints() -> None:
    assert inner_lr_multiplier(0, 0.1, 10) == pytest.approx(0.19)  # the first step already moves
    assert inner_lr_multiplier(9, 0.1, 10) == 1.0
    assert inner_lr_multiplier(500, 0.1, 10) == 1.0
    assert inner_lr_multiplier(0, 0.1, 0) == 1.0
    with pytest.raises(WarmupError, match="must be >= 0"):
        inner_lr_multiplier(-1, 0.1, 10)


def test_warmup_steps() -> None:
    assert InnerLrWarmup(0.1, 0.1).steps(4800, 100) == 480
    assert InnerLrWarmup(0.1).steps(4800, 480) == 480  # auto: over the outer warm-up


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sometimes", "must be auto, off, or a mapping"),
        ({"init_ratio": 0.1}, "must be auto, off, or a mapping"),
        ({"init_ratio": 2.0, "fraction": 0.1}, r"init_ratio must be in \[0, 1\]"),
        ({"init_ratio": 0.1, "fraction": -0.5}, r"fraction must be in \[0, 1\]"),
        ({"init_ratio": "x", "fraction": 0.1}, "init_ratio must be a finite number"),
    ],
)
def test_bad_config_values_are_refused(tmp_path, value, message) -> None:
    with pytest.raises(ConfigError, match=f"train.inner_lr_warmup.*{message}|{message}"):
        tiny_config(tmp_path / "run", tmp_path, **{"train.inner_lr_warmup": repr(value).replace("'", "")})


def test_config_values(tmp_path) -> None:
    def value(setting: str) -> object:
        return tiny_config(tmp_path / "run", tmp_path, **{"train.inner_lr_warmup": setting}).train.inner_lr_warmup

    assert tiny_config(tmp_path / "run", tmp_path).train.inner_lr_warmup == "auto"
    assert value("off") == value("null") == "off"
    assert value("{init_ratio: 0.1, fraction: 0.2}") == {"init_ratio": 0.1, "fraction": 0.2}


def test_auto_is_each_arch_recipe() -> None:
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    assert resolve_warmup("auto", build("ttt-mlp", "tiny", **small)) == InnerLrWarmup(0.1)
    assert resolve_warmup("auto", build("ttt-linear", "tiny", **small)) is None
    assert resolve_warmup("auto", build("transformer", "tiny", **small)) is None
    assert resolve_warmup("off", build("ttt-mlp", "tiny", **small)) is None
    swa = build("swa", "tiny", **small)
    assert isinstance(swa, InnerLrScaled)
    assert not swa.has_inner_lr
    with pytest.raises(WarmupError, match="has no inner learning rate to warm up"):
        resolve_warmup({"init_ratio": 0.1, "fraction": 0.1}, swa)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_scale_multiplies_the_base_lr(inner) -> None:
    torch.manual_seed(0)
    scaled = TTTLayer(16, 2, inner, mini_batch_size=4, base_lr=0.5).double()
    plain = TTTLayer(16, 2, inner, mini_batch_size=4, base_lr=0.5 * 0.3).double()
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    scaled.inner_lr_scale = 0.3
    assert torch.equal(scaled(x)[0], plain(x)[0])
    scaled.inner_lr_scale = 1.0
    assert not torch.allclose(scaled(x)[0], plain(x)[0])


def test_the_loop_sets_the_scale_each_step(tmp_path, data_dir, monkeypatch) -> None:
    calls: list[float] = []
    original = InnerLrScaled.set_inner_lr_scale

    def record(self, scale: float) -> None:
        calls.append(scale)
        original(self, scale)

    monkeypatch.setattr(InnerLrScaled, "set_inner_lr_scale", record)
    config = tiny_config(
        tmp_path / "run",
        data_dir,
        **{"model.arch": "ttt-mlp", "train.steps": 4, "optim.warmup_steps": 2, "eval.tokens": 0},
    )
    train(config)
    assert calls == pytest.approx([0.1 + 0.9 * 0.5, 1.0, 1.0, 1.0], abs=1e-15)
