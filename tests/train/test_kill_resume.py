"""Exact resume after a hard kill: a CPU run in a subprocess is SIGKILLed after a checkpoint, resumed with
``--resume``, and must give the same loss curve as an uninterrupted run, step for step and bit for bit.
SIGTERM instead stops the run cleanly with a checkpoint of the step it was on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from train_testing import tiny_config, write_config

from tttlm.train import read_metrics, train
from tttlm.train.checkpoint import list_checkpoints, verify

STEPS = 60


def _curve(run_dir: Path) -> list[tuple]:
    return [(r["step"], r["kind"], r.get("loss"), r.get("val_loss"), r.get("grad_norm")) for r in read_metrics(run_dir)]


def _start(config_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tttlm.cli", "train", "--config", str(config_path), "--no-progress", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _stop_after_first_checkpoint(process: subprocess.Popen, sig: int) -> list[str]:
    """Read the run's output until it reports its first checkpoint, then send ``sig``; return all output."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "saved checkpoint" in line:
            process.send_signal(sig)
            break
    lines += process.stdout.readlines()
    process.wait(timeout=120)
    return lines


def _config(tmp_path: Path, data_dir: Path, name: str) -> Path:
    settings = {"train.steps": STEPS, "checkpoint.every": 4, "checkpoint.keep_last": 3, "eval.every": 10}
    return write_config(tmp_path / f"{name}.yaml", tiny_config(tmp_path / name, data_dir, **settings))


def test_sigkill_then_resume_gives_the_same_loss_curve(data_dir, tmp_path) -> None:
    reference = train(tiny_config(tmp_path / "reference", data_dir, **{"train.steps": STEPS, "eval.every": 10}))
    config_path = _config(tmp_path, data_dir, "killed")

    process = _start(config_path)
    output = "".join(_stop_after_first_checkpoint(process, signal.SIGKILL))
    assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-way:\n{output}"
    steps = [step for step, _ in list_checkpoints(tmp_path / "killed")]
    assert steps, output
    assert steps[-1] < STEPS  # killed before the end
    partial = _curve(tmp_path / "killed")
    assert partial == _curve(reference)[: len(partial)]

    resumed = _start(config_path, "--resume")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert f"resuming from {tmp_path / 'killed' / 'checkpoints'}" in output
    assert _curve(tmp_path / "killed") == _curve(reference)  # bitwise, every step
    assert (tmp_path / "killed" / "model" / "model.safetensors").read_bytes() == (
        reference / "model" / "model.safetensors"
    ).read_bytes()


def test_sigterm_saves_a_checkpoint_and_exits(data_dir, tmp_path) -> None:
    config_path = _config(tmp_path, data_dir, "stopped")
    process = _start(config_path)
    output = "".join(_stop_after_first_checkpoint(process, signal.SIGTERM))
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM at step" in output
    assert "--resume" in output
    step, path = list_checkpoints(tmp_path / "stopped")[-1]
    assert verify(path)["step"] == step < STEPS
    # the checkpoint is the step the run stopped at: the metrics end there too
    assert max(r["step"] for r in read_metrics(tmp_path / "stopped")) == step
