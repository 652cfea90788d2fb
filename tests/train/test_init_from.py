"""``model.init_from`` / ``tttlm train --init-from``: a second stage starts from the first stage's weights (its final
model, a checkpoint or a model directory) with a fresh optimizer and schedule, and refuses another architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_testing import tiny_config, write_config

from tttlm.cli import main
from tttlm.train import checkpoint as ckpt
from tttlm.train.config import ConfigError
from tttlm.train.loop import train
from tttlm.train.run_dir import RunDir


def _stage(tmp_path: Path, data_dir: Path, name: str, **changes: object) -> Path:
    config = tiny_config(tmp_path / name, data_dir, **{"train.steps": 2, "checkpoint.every": 1, **changes})
    return train(config)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished first stage (2 steps at length 32)."""
    return _stage(tmp_path_factory.mktemp("init-from"), data_dir, "stage1")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(RunDir(run).model / "model.safetensors")


@pytest.mark.parametrize("source", ["run", "model", "checkpoint"])
def test_the_second_stage_starts_from_the_first_stage_weights(
    tmp_path: Path, data_dir: Path, first: Path, source: str
) -> None:
    path = {"run": first, "model": RunDir(first).model, "checkpoint": ckpt.list_checkpoints(first)[-1][1]}[source]
    # one step at lr 1e-12: the exported model is the initialisation up to ~1e-12
    config = tiny_config(
        tmp_path / "stage2",
        data_dir,
        **{
            "train.steps": 1,
            "optim.lr": 1e-12,
            "optim.min_lr": 0.0,
            "optim.warmup_steps": 0,
            "data.seq_len": 64,
            "model.init_from": str(path),
        },
    )
    second = train(config)
    got, expected = _weights(second), _weights(first)
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-9, msg=name)
    # fresh optimizer and schedule: the second run's first checkpoint is its own step 1, not a continuation
    assert ckpt.list_checkpoints(second)[0][0] == 1


def test_a_fresh_model_differs_from_the_first_stage(tmp_path: Path, data_dir: Path, first: Path) -> None:
    # the test above could not pass by accident: without init_from the same seed gives other weights
    second = _stage(
        tmp_path,
        data_dir,
        "fresh",
        **{"optim.lr": 1e-12, "optim.min_lr": 0.0, "optim.warmup_steps": 0, "train.steps": 1},
    )
    assert not torch.equal(_weights(second)["model.embed_tokens.weight"], _weights(first)["model.embed_tokens.weight"])


def test_the_cli_flag_and_another_architecture_is_refused(
    tmp_path: Path, data_dir: Path, first: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tiny_config(tmp_path / "wider", data_dir, **{"model.overrides.hidden_size": 48})
    path = write_config(tmp_path / "wider.yaml", other)
    assert main(["train", "--config", str(path), "--init-from", str(first), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "another architecture" in err
    assert "hidden_size: 32 → 48" in err
    with pytest.raises(ConfigError, match="is a ttt-linear model, this run builds ttt-e2e"):
        train(tiny_config(tmp_path / "e2e", data_dir, **{"model.arch": "ttt-e2e", "model.init_from": str(first)}))


def test_a_directory_without_weights_is_refused(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="holds no model"):
        train(tiny_config(tmp_path / "run", data_dir, **{"model.init_from": str(tmp_path)}))
    with pytest.raises(ConfigError, match="not a directory"):
        train(tiny_config(tmp_path / "run2", data_dir, **{"model.init_from": str(tmp_path / "nope")}))


def test_a_resumed_second_stage_continues_its_own_checkpoints(tmp_path: Path, data_dir: Path, first: Path) -> None:
    changes = {"train.steps": 3, "checkpoint.every": 1, "data.seq_len": 64, "model.init_from": str(first)}
    config = tiny_config(tmp_path / "stage2", data_dir, **changes)
    train(tiny_config(tmp_path / "stage2", data_dir, **{**changes, "train.steps": 2}), allow_config_change=False)
    resumed = train(config, resume=True, allow_config_change=True)
    assert [step for step, _ in ckpt.list_checkpoints(resumed)][-1] == 3


def test_size_from_init_takes_the_sources_config(tmp_path: Path, data_dir: Path, first: Path) -> None:
    # a source whose config is no preset (here: the first stage, trained with overrides) without repeating them
    changes = {"model.size": "from-init", "model.overrides": {}, "model.init_from": str(first), "train.steps": 2}
    second = train(tiny_config(tmp_path / "stage2", data_dir, **changes))
    assert set(_weights(second)) == set(_weights(first))
    with pytest.raises(ConfigError, match="from-init takes the whole model config"):
        tiny_config(tmp_path / "bad", data_dir, **{"model.size": "from-init"})


def test_trainable_freezes_every_other_parameter(tmp_path: Path, data_dir: Path, first: Path) -> None:
    changes = {"model.init_from": str(first), "train.steps": 2, "train.trainable": ["layers.0.mlp."]}
    second = train(tiny_config(tmp_path / "stage2", data_dir, **changes))
    before, after = _weights(first), _weights(second)
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved
    assert all(name.startswith("model.layers.0.mlp.") for name in moved), moved
    with pytest.raises(ConfigError, match="matches no parameter"):
        train(tiny_config(tmp_path / "none", data_dir, **{"train.trainable": ["nothing-like-this"]}))


@pytest.mark.parametrize("family", ["LlamaConfig", "Qwen2Config", "Qwen3Config"])
def test_a_converted_pretrained_model_fine_tunes_with_init_from(tmp_path: Path, data_dir: Path, family: str) -> None:
    # tttlm e2e-init of a tiny transformers model, then the meta-learning fine-tune from it (model.size: from-init)
    import transformers

    from tttlm.data.packing import PackedDataset

    vocab = PackedDataset(data_dir, "train").vocab_size
    config = getattr(transformers, family)(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "source")
    assert (
        main(
            [
                "e2e-init",
                "--from",
                str(tmp_path / "source"),
                str(tmp_path / "e2e"),
                "--window",
                "16",
                "--mini-batch",
                "4",
            ]
        )
        == 0
    )
    changes = {
        "model.arch": "ttt-e2e",
        "model.size": "from-init",
        "model.overrides": {},
        "train.steps": 2,
        "model.init_from": str(tmp_path / "e2e"),
        "train.inner_lr_warmup": "auto",
    }
    run = train(tiny_config(tmp_path / "meta", data_dir, **changes))
    assert (RunDir(run).model / "model.safetensors").is_file()


def test_a_second_stage_may_raise_the_rope_base(tmp_path: Path, data_dir: Path, first: Path) -> None:
    """Paper 2 raises RoPE's θ when it extends the context: that change is allowed (and named), no other is."""
    from transformers import AutoConfig

    from tttlm.train.init_from import config_differences

    config = tiny_config(
        tmp_path / "raised",
        data_dir,
        **{"train.steps": 2, "data.seq_len": 64, "model.init_from": str(first), "model.overrides.rope_theta": 1e6},
    )
    second = train(config)
    assert AutoConfig.from_pretrained(RunDir(second).model).rope_theta == 1e6
    source = AutoConfig.from_pretrained(RunDir(first).model).to_dict()
    target = {**source, "rope_theta": 1e6, "hidden_size": 48}
    assert config_differences(source, target, changeable=True) == [f"rope_theta: {source['rope_theta']!r} → 1000000.0"]
    assert config_differences(source, target) == [f"hidden_size: {source['hidden_size']!r} → 48"]
