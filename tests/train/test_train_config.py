"""Training configs: the shipped YAML files, validation messages, --set overrides, and the lr schedule."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from tttlm.train.config import (
    ConfigError,
    OptimConfig,
    accumulation_steps,
    config_from_dict,
    load_config,
    trajectory_of,
)
from tttlm.train.optim import lr_at

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# the TTT paper's recipe (ttt-lm-jax scripts/ttt_linear/*.sh): steps, peak lr, warm-up
PAPER = {"125m": (4800, 3e-3, 480), "350m": (13500, 1.5e-3, 1350), "760m": (29000, 1.25e-3, 2900),
         "1.3b": (50000, 1e-3, 5000)}  # fmt: skip


def test_tiny_config_is_small() -> None:
    config = load_config(CONFIGS / "tiny.yaml")
    assert config.name == "tiny"
    assert config.model.size == "tiny"
    assert config.train.batch_tokens * config.train.steps <= 300_000
    assert accumulation_steps(config, 1) * config.train.micro_batch_size == config.train.batch_tokens // 128


@pytest.mark.parametrize("size", list(PAPER))
def test_paper_configs(size: str) -> None:
    config = load_config(CONFIGS / f"{size}.yaml")
    steps, lr, warmup = PAPER[size]
    assert (config.train.steps, config.optim.lr, config.optim.warmup_steps) == (steps, lr, warmup)
    assert config.data.seq_len == 2048
    assert config.train.batch_tokens == 2**19  # 0.5M tokens = 256 sequences of 2048
    assert (config.optim.min_lr, config.optim.weight_decay, config.optim.grad_clip) == (1e-5, 0.1, 1.0)
    assert config.optim.betas == (0.9, 0.95)
    assert config.model.size == size
    for world in (1, 8):
        assert accumulation_steps(config, world) * config.train.micro_batch_size * world == 256


def test_set_overrides_and_defaults() -> None:
    config = config_from_dict({"model": {"size": "tiny"}}, name="x", overrides=["train.steps=7", "optim.lr=1e-3",
                              "model.overrides.hidden_size=32", "optim.betas=[0.8, 0.9]"])  # fmt: skip
    assert config.name == "x"
    assert config.train.steps == 7
    assert config.optim.lr == 1e-3  # "1e-3" (YAML 1.1 reads it as a string) is accepted as a number
    assert config.model.overrides == {"hidden_size": 32}
    assert config.optim.betas == (0.8, 0.9)
    assert config.run_dir == Path("runs/x")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"trian": {}}, "unknown key.*trian.*valid keys: name, out_dir"),
        ({"train": {"step": 3}}, "unknown key.*train.step.*valid keys of train: steps"),
        ({"train": {"steps": "many"}}, "train.steps must be an integer"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be a number"),
        ({"log": {"tensorboard": "yes"}}, "log.tensorboard must be true or false"),
        ({"data": {"seq_len": 100}, "train": {"batch_tokens": 1050}}, "must be a multiple of data.seq_len"),
        ({"optim": {"lr": 1e-3, "min_lr": 1e-2}}, "optim.min_lr must be in"),
        ({"optim": {"warmup_steps": 5000}, "train": {"steps": 100}}, "optim.warmup_steps must be in"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"optim": {"betas": [0.9]}}, "optim.betas must be two numbers"),
        ({"eval": {"tokens": 10}, "data": {"seq_len": 64}}, "eval.tokens .* must be at least data.seq_len"),
        ({"model": {"match_params": "llama"}}, r"model.match_params: match_params must be None .* 'ttt-linear'"),
    ],
)
def test_invalid_configs(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_match_params_is_in_the_trajectory_where_it_changes_the_model() -> None:
    def trajectory(arch: str, **model: object) -> object:
        return config_from_dict({"model": {"arch": arch, **model}}).trajectory()["model"]["match_params"]

    assert trajectory("swa", match_params="ttt-linear") == "ttt-linear"
    assert trajectory("swa") is None
    # matching leaves the reference, ttt-e2e and a given width as they are: equal either way
    assert trajectory("ttt-linear", match_params="ttt-linear") is None
    assert trajectory("ttt-e2e", match_params="ttt-linear") is None
    assert trajectory("swa", match_params="ttt-linear", overrides={"intermediate_size": 64}) is None
    # a config saved before the key existed was trained with the registry's matched widths of then
    assert trajectory_of({"model": {"arch": "swa", "size": "tiny", "overrides": {}}})["model"]["match_params"] == (
        "ttt-linear"
    )


def test_batch_that_does_not_split() -> None:
    config = config_from_dict({"data": {"seq_len": 16}, "train": {"batch_tokens": 96, "micro_batch_size": 4}})
    with pytest.raises(ConfigError, match=r"6 sequences .* could be one of \[1, 2, 3, 6\]"):
        accumulation_steps(config, 1)
    assert accumulation_steps(config_from_dict({"data": {"seq_len": 16}, "train": {"batch_tokens": 96}}), 2) == 3


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        config_from_dict({}, overrides=["train.steps"])


def test_lr_schedule() -> None:
    optim = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(step, optim, 110) for step in range(110)]
    assert lrs[0] == pytest.approx(0.1)  # the first step already moves
    assert lrs[9] == pytest.approx(1.0)  # warm-up ends at the peak
    assert all(b > a for a, b in itertools.pairwise(lrs[:10]))  # linear rise
    assert all(b <= a for a, b in itertools.pairwise(lrs[10:]))  # cosine decay
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)  # reaches min_lr on the last step
    assert lrs[60] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 50 / 99)))
    assert lr_at(0, OptimConfig(lr=2.0, min_lr=0.0, warmup_steps=0), 1) == pytest.approx(2.0)


def test_a_run_trained_with_the_default_data_dir_equals_one_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TTTLM_CACHE", str(tmp_path / "cache"))
    from tttlm.data.prepare import default_data_dir

    plain = {"data": {"dir": None, "seq_len": 64}}
    named = {"data": {"dir": str(default_data_dir()), "seq_len": 64}}
    assert trajectory_of(plain) == trajectory_of(named)
    assert trajectory_of(plain) != trajectory_of({"data": {"dir": str(tmp_path / "other"), "seq_len": 64}})
