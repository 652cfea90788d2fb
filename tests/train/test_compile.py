"""``train.compile`` / ``tttlm train --compile``: a compiled run follows the eager run's loss curve, writes
checkpoints of the plain module (no ``_orig_mod.`` keys) that resume exactly, compiled or not; bad settings are
refused with the reason.

The runs compile with ``aot_eager`` (Dynamo's and AOTAutograd's graphs on eager kernels: a few seconds; the
trainer's default, inductor, takes minutes here and is covered by tests/models/test_compiled.py). The tiny TTT-Linear
runs warm up their inner learning rate, so the compiled forward sees a new ``inner_lr_scale`` at every step of the
warm-up: the graph count below checks that this costs one recompile, not one per step.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from train_testing import tiny_config

from tttlm.cli import main
from tttlm.models import compiled
from tttlm.train import ConfigError, read_metrics, train
from tttlm.train.checkpoint import list_checkpoints
from tttlm.train.config import config_from_dict

# float32 losses after the same steps: compiled graphs reassociate sums (a few ulps per step, measured ≤ 1e-6
# relative over 6 steps); a wrong compiled gradient changes the curve from the second step on by far more
LOSS_RTOL = 1e-4
# the inner learning rate from 10% over the first half of the 6 steps: a new scale at steps 1-3
WARMUP = {"train.inner_lr_warmup": "{init_ratio: 0.1, fraction: 0.5}"}


@pytest.fixture(autouse=True)
def _cheap_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", "aot_eager")


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


def test_compiled_run_follows_the_eager_run_and_resumes(data_dir, tmp_path) -> None:
    eager = train(tiny_config(tmp_path / "eager", data_dir, **WARMUP))
    with compiled.cold_compile_cache():
        before = compiled.CompileCounters.now()
        run = train(tiny_config(tmp_path / "compiled", data_dir, **WARMUP, **{"train.compile": "true"}))
        after = compiled.CompileCounters.now()
    # compiled, in one graph, and the inner-lr warm-up's changing scale made it recompile once (not per step)
    assert after.graph_breaks == before.graph_breaks
    assert after.graphs - before.graphs == 2
    torch.testing.assert_close(_losses(run), _losses(eager), rtol=LOSS_RTOL, atol=0)

    _, checkpoint = list_checkpoints(run)[-1]
    keys = set(load_file(checkpoint / "model.safetensors"))
    assert keys == set(load_file(list_checkpoints(eager)[-1][1] / "model.safetensors"))
    assert not any("_orig_mod" in key for key in keys)

    # resume the compiled run from step 4, compiled: the same steps 5 and 6 as before (up to rounding)
    shutil.rmtree(run / "checkpoints" / "step-00000006")
    shutil.rmtree(run / "model")
    first = _losses(run)
    train(tiny_config(run, data_dir, **WARMUP, **{"train.compile": "true"}), resume=True)
    torch.testing.assert_close(_losses(run), first, rtol=LOSS_RTOL, atol=0)
    # and eagerly: train.compile is not part of the trajectory, so the checkpoint accepts the change
    shutil.rmtree(run / "checkpoints" / "step-00000006")
    train(tiny_config(run, data_dir, **WARMUP), resume=True)
    torch.testing.assert_close(_losses(run), first, rtol=LOSS_RTOL, atol=0)


def test_cli_flag_sets_train_compile(data_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from train_testing import write_config

    config = write_config(tmp_path / "run.yaml", tiny_config(tmp_path / "run", data_dir, **{"train.steps": 2}))
    assert main(["train", "--config", str(config), "--compile", "--no-progress"]) == 0
    assert "compiled (train.compile)" in capsys.readouterr().err
    assert "compile: true" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"compile": "yes"}}, "train.compile must be true or false"),
        ({"model": {"arch": "ttt-e2e"}, "train": {"compile": True}}, "train.compile: ttt-e2e.*double backward"),
    ],
)
def test_bad_compile_settings_are_refused(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)
