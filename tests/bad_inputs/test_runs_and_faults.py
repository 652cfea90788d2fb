"""Bad resumes, broken checkpoints and final models, unwritable run directories, non-finite losses, and kill -9
during a checkpoint and during the final export: each ends in a clear exit status and message, and whatever was
good before (checkpoints, data) is still there and still valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from bad_testing import assert_refused, copy_run, fingerprint, flip_byte, run_cli, truncate
from safetensors.torch import load_file
from transformers import AutoTokenizer

import tttlm.train.loop as loop
from tttlm.train import read_metrics
from tttlm.train.checkpoint import EXPORT_MANIFEST, list_checkpoints, verify, verify_export

# ---------------------------------------------------------------- resuming


def test_changed_lr_on_resume_is_refused_without_the_flag(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    before = fingerprint(run)
    config = config_for(run, **{"train.steps": 6, "optim.lr": 1e-3})
    assert_refused(capsys, ["train", "--config", config, "--resume"], 2, "optim", "--allow-config-change")
    assert fingerprint(run) == before


def test_changed_lr_on_resume_with_the_flag(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    config = config_for(run, **{"train.steps": 6, "optim.lr": 1e-3})
    code, err = run_cli(capsys, "train", "--config", config, "--resume", "--allow-config-change")
    assert code == 0, err
    assert "with a changed config" in err
    assert "not an exact continuation" in err
    assert [step for step, _ in list_checkpoints(run)] == [2, 4, 6]
    for _, path in list_checkpoints(run):
        verify(path)


def test_changed_model_is_refused_even_with_the_flag(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    before = fingerprint(run)
    config = config_for(run, **{"model.overrides.hidden_size": 64})
    argv = ["train", "--config", config, "--resume", "--allow-config-change"]
    assert_refused(capsys, argv, 2, "model", "must stay the same")
    assert fingerprint(run) == before  # config.yaml too: it still says how the checkpoints were trained


def test_new_run_over_checkpoints_is_refused(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    before = fingerprint(run)
    assert_refused(capsys, ["train", "--config", config_for(run)], 2, "already holds checkpoints", "--resume")
    assert fingerprint(run) == before


def test_every_checkpoint_corrupt(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    for _, path in list_checkpoints(run):
        flip_byte(path / "model.safetensors")
    before = fingerprint(run / "checkpoints")
    assert_refused(capsys, ["train", "--config", config_for(run), "--resume"], 2, "every checkpoint", "corrupt")
    assert fingerprint(run / "checkpoints") == before  # nothing deleted: the user decides


def test_newest_checkpoint_truncated_resumes_from_the_one_before(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    truncate(list_checkpoints(run)[-1][1] / "optimizer.safetensors")
    code, err = run_cli(capsys, "train", "--config", config_for(run), "--resume")
    assert code == 0, err
    assert "skipping corrupt checkpoint step-00000004" in err
    assert "resuming from" in err
    assert "step-00000002" in err


# ---------------------------------------------------------------- the final model


def _assert_good_export(run, reference) -> None:
    verify_export(run / "model")
    weights = (run / "model" / "model.safetensors").read_bytes()
    assert weights == (reference / "model" / "model.safetensors").read_bytes()
    AutoTokenizer.from_pretrained(run / "model")  # what failed on the half-written model
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize(
    "damage",
    [
        lambda model: (model / "tokenizer_config.json").write_bytes(b""),  # the half-written model/
        lambda model: truncate(model / "model.safetensors"),
        lambda model: (model / EXPORT_MANIFEST).unlink(),  # a model written before exports had a manifest
    ],
    ids=["empty-tokenizer-config", "truncated-weights", "no-manifest"],
)
def test_resume_re_exports_a_model_that_fails_verification(capsys, tmp_path, config_for, finished_run, damage) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    damage(run / "model")
    checkpoints = fingerprint(run / "checkpoints")
    code, err = run_cli(capsys, "train", "--config", config_for(run), "--resume")
    assert code == 0, err
    assert "fails verification" in err
    _assert_good_export(run, finished_run)
    assert fingerprint(run / "checkpoints") == checkpoints


def test_resume_of_a_finished_run_keeps_a_good_model(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    before = fingerprint(run / "model")
    code, err = run_cli(capsys, "train", "--config", config_for(run), "--resume")
    assert code == 0, err
    assert fingerprint(run / "model") == before


# ---------------------------------------------------------------- unwritable run directories


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories; see the test below")
def test_read_only_run_dir(capsys, tmp_path, config_for) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        line = assert_refused(capsys, ["train", "--config", config_for(parent / "run")], 2, "cannot write the run")
    finally:
        parent.chmod(0o700)
    assert "Permission denied" in line
    assert "out_dir" in line


def test_run_dir_blocked_by_a_file(capsys, tmp_path, config_for) -> None:
    # the fault that holds as root too (root bypasses permissions): the run directory's parent is a file
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    line = assert_refused(capsys, ["train", "--config", config_for(blocker / "run")], 2, "cannot write the run")
    assert "out_dir" in line
    assert blocker.read_text() == "not a directory"


# ---------------------------------------------------------------- non-finite losses


def _poisoned(monkeypatch, *, training_calls: range | None = None, checking_calls: range | None = None) -> None:
    """Make the model's loss NaN on some forward calls: ``training_calls`` counts the forwards with gradients (two
    micro-steps per step here), ``checking_calls`` the ones without (the checkpoint guard; no eval in these runs)."""
    real = loop.make_model
    counts = {True: 0, False: 0}

    def make_model(*args, **kwargs):
        model = real(*args, **kwargs)

        def hook(module, inputs, output):
            training = loop.torch.is_grad_enabled()
            index = counts[training]
            counts[training] += 1
            poisoned = training_calls if training else checking_calls
            if poisoned is not None and index in poisoned:
                output.loss = output.loss * float("nan")
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(loop, "make_model", make_model)


def test_nan_loss_stops_before_the_update(capsys, monkeypatch, tmp_path, config_for) -> None:
    _poisoned(monkeypatch, training_calls=range(6, 100))  # step 4 on
    config = config_for(tmp_path / "run", **{"eval.tokens": 0})
    line = assert_refused(capsys, ["train", "--config", config], 1, "at step 4 is not finite", "step-00000002")
    assert "--allow-config-change" in line
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert not (tmp_path / "run" / "model").exists()


def test_nan_loss_skipped_when_configured(capsys, monkeypatch, tmp_path, config_for) -> None:
    _poisoned(monkeypatch, training_calls=range(4, 6))  # step 3 only
    config = config_for(tmp_path / "run", **{"eval.tokens": 0, "train.on_nonfinite": "skip"})
    code, err = run_cli(capsys, "train", "--config", config)
    assert code == 0, err
    assert "at step 3 is not finite: update skipped" in err
    skipped = [r["step"] for r in read_metrics(tmp_path / "run") if r.get("skipped")]
    assert skipped == [3]
    weights = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert all(t.isfinite().all() for t in weights.values())


def test_diverged_weights_are_not_checkpointed_and_resume_with_lower_lr(capsys, monkeypatch, tmp_path, config_for):
    # the weights after step 4 are finite but give NaN on step 4's batch: no step-4 checkpoint, and the message does
    # not call step 2 anything but what it is
    _poisoned(monkeypatch, checking_calls=range(1, 100))
    run = tmp_path / "run"
    config = config_for(run, **{"eval.tokens": 0})
    line = assert_refused(
        capsys, ["train", "--config", config], 1, "after step 4 give a non-finite loss", "step-00000002"
    )
    assert "untouched" not in line
    assert [step for step, _ in list_checkpoints(run)] == [2]
    before = fingerprint(run / "checkpoints")
    monkeypatch.undo()
    lower = config_for(run, **{"eval.tokens": 0, "optim.lr": 1e-3})
    assert_refused(capsys, ["train", "--config", lower, "--resume"], 2, "--allow-config-change")
    assert fingerprint(run / "checkpoints") == before
    code, err = run_cli(capsys, "train", "--config", lower, "--resume", "--allow-config-change")
    assert code == 0, err
    assert [step for step, _ in list_checkpoints(run)] == [2, 4]


def test_nan_before_any_checkpoint(capsys, monkeypatch, tmp_path, config_for) -> None:
    _poisoned(monkeypatch, training_calls=range(100))
    config = config_for(tmp_path / "run", **{"eval.tokens": 0})
    assert_refused(capsys, ["train", "--config", config], 1, "at step 1 is not finite", "No checkpoint was written")
    assert not list_checkpoints(tmp_path / "run")


# ---------------------------------------------------------------- kill -9


_KILL_DURING = """
import os, signal, sys
import {module} as target
real, calls = target.{name}, []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == {call}:
        real(*args, **kwargs)
        with open(args[1], "r+b") as handle:  # half of the file on disk, then the kill
            handle.truncate(os.path.getsize(args[1]) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
target.{name} = dying
from tttlm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _killed_run(config, *, module: str, name: str, call: int) -> str:
    """Run ``tttlm train`` in a subprocess that SIGKILLs itself in the ``call``-th call of ``module.name`` (a
    function writing the file ``args[1]``), after half of that file is written; return its output."""
    script = _KILL_DURING.format(module=module, name=name, call=call)
    command = [sys.executable, "-c", script, "train", "--config", str(config), "--no-progress"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stdout + process.stderr
    return process.stderr


def test_kill_during_a_checkpoint_then_resume(capsys, tmp_path, config_for, finished_run, data_dir) -> None:
    run = tmp_path / "run"
    config = config_for(run)
    # save_file writes model, optimizer, rng of each checkpoint: call 5 is the optimizer state of step 4
    _killed_run(config, module="tttlm.train.checkpoint", name="save_file", call=5)
    assert [step for step, _ in list_checkpoints(run)] == [2]
    survivor, data = fingerprint(run / "checkpoints" / "step-00000002"), fingerprint(data_dir)
    code, err = run_cli(capsys, "train", "--config", config, "--resume")
    assert code == 0, err
    assert "step-00000002" in err
    _assert_good_export(run, finished_run)  # bit-identical to the uninterrupted run
    assert fingerprint(run / "checkpoints" / "step-00000002") == survivor
    assert fingerprint(data_dir) == data
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_kill_during_the_final_export_then_resume(capsys, tmp_path, config_for, finished_run) -> None:
    run = tmp_path / "run"
    config = config_for(run)
    # the export's copy of the tokenizer files: the weights are written, the tokenizer is half there
    _killed_run(config, module="shutil", name="copy2", call=1)
    assert not (run / "model").exists()  # the half-written export never has the real name
    assert list(run.glob(".tmp-model-*"))
    checkpoints = fingerprint(run / "checkpoints")
    code, err = run_cli(capsys, "train", "--config", config, "--resume")
    assert code == 0, err
    _assert_good_export(run, finished_run)
    assert fingerprint(run / "checkpoints") == checkpoints
    assert json.loads((run / "model" / EXPORT_MANIFEST).read_text())["step"] == 4


def test_fewer_steps_than_the_checkpoint_on_resume(capsys, tmp_path, config_for, finished_run) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    before = fingerprint(run)
    config = config_for(run, **{"train.steps": 2, "optim.warmup_steps": 1})
    argv = ["train", "--config", config, "--resume", "--allow-config-change"]
    assert_refused(capsys, argv, 2, "past train.steps=2", "at least 4")
    assert fingerprint(run) == before
