"""Every architecture of the model registry trains through the same loop (no per-arch code) and resumes exactly."""

from __future__ import annotations

import shutil

import pytest
from train_testing import tiny_config

from tttlm.models import ARCHS
from tttlm.train import read_metrics, train
from tttlm.train.factory import make_model


def _curve(run_dir) -> list[tuple]:
    return [(r["step"], r.get("loss"), r.get("val_loss"), r.get("grad_norm")) for r in read_metrics(run_dir)]


@pytest.mark.parametrize("arch", ARCHS)
def test_train_and_resume(arch: str, data_dir, tmp_path) -> None:
    settings = {"model.arch": arch, "model.overrides": "{}", "train.steps": 4, "eval.every": 2}
    run_dir = train(tiny_config(tmp_path / "run", data_dir, **settings))
    curve = _curve(run_dir)
    assert len(curve) == 6  # 4 steps + 2 evaluations
    assert curve[-2][1] < curve[0][1]  # the loss went down
    # drop the last checkpoint and the final model: resuming from step 2 must give the same curve, bit for bit
    shutil.rmtree(run_dir / "checkpoints" / "step-00000004")
    shutil.rmtree(run_dir / "model")
    train(tiny_config(tmp_path / "run", data_dir, **settings), resume=True)
    assert _curve(run_dir) == curve


@pytest.mark.parametrize("arch", ["ttt-linear", "ttt-mlp"])
def test_make_model_sets_the_vocabulary(arch: str) -> None:
    model = make_model(arch, "tiny", {"vocab_size": 300})
    assert model.config.vocab_size == 300
    assert model.get_input_embeddings().weight.shape[0] == 300


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match=r"unknown model.arch .lstm.; choose one of ttt-linear"):
        make_model("lstm", "tiny", {})
