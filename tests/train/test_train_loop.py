"""The trainer in-process: what a run writes, exact resume from a checkpoint, corrupt checkpoints, refusals."""

from __future__ import annotations

import shutil

import pytest
import torch
from train_testing import tiny_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from tttlm.data import DataMismatchError
from tttlm.data.packing import CorruptDataError
from tttlm.train import ConfigError, read_metrics, train
from tttlm.train.checkpoint import CorruptCheckpointError, list_checkpoints


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """One complete 6-step run (checkpoints every 2 steps, the last 2 kept), shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    train(tiny_config(run_dir, data_dir, **{"log.tensorboard": "true"}))
    return run_dir


def _curve(run_dir) -> list[dict]:
    """The metrics without wall-clock timings."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run_dir)]


def _copy(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


def test_run_directory(finished_run) -> None:
    records = read_metrics(finished_run)
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert losses[-1] < losses[0]  # it learns
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(r["val_loss"] > 0 for r in evals)
    assert {"lr", "grad_norm", "tokens", "tokens_per_s"} <= records[0].keys()
    assert [step for step, _ in list_checkpoints(finished_run)] == [4, 6]  # keep_last: 2
    assert (finished_run / "config.yaml").exists()
    assert list((finished_run / "tensorboard").glob("events.out.tfevents.*"))


def test_final_model_and_tokenizer_load_with_transformers(finished_run) -> None:
    model = AutoModelForCausalLM.from_pretrained(finished_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(finished_run / "model"), local_files_only=True)
    assert model.config.vocab_size == len(tokenizer) == 300
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    ids = torch.tensor([tokenizer("the lord said unto them")["input_ids"]])
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)


def test_resume_reproduces_the_run_exactly(finished_run, data_dir, tmp_path) -> None:
    run_dir = _copy(finished_run, tmp_path)
    shutil.rmtree(run_dir / "checkpoints" / "step-00000006")
    shutil.rmtree(run_dir / "model")
    train(tiny_config(run_dir, data_dir), resume=True)
    # bitwise: losses, learning rates, gradient norms and validation losses of steps 5 and 6 are recomputed
    assert _curve(run_dir) == _curve(finished_run)


def test_corrupt_newest_checkpoint_is_skipped(finished_run, data_dir, tmp_path, capsys) -> None:
    run_dir = _copy(finished_run, tmp_path)
    weights = run_dir / "checkpoints" / "step-00000006" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    train(tiny_config(run_dir, data_dir), resume=True)
    err = capsys.readouterr().err
    assert "skipping corrupt checkpoint step-00000006: model.safetensors does not match its sha256" in err
    assert "resuming from" in err
    assert "step-00000004 (step 4" in err
    assert _curve(run_dir) == _curve(finished_run)


def test_all_checkpoints_corrupt_is_an_error(finished_run, data_dir, tmp_path) -> None:
    run_dir = _copy(finished_run, tmp_path)
    for _, path in list_checkpoints(run_dir):
        (path / "optimizer.safetensors").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"every checkpoint .* is corrupt"):
        train(tiny_config(run_dir, data_dir), resume=True)


def test_existing_run_needs_resume(finished_run, data_dir) -> None:
    with pytest.raises(ConfigError, match=r"already holds checkpoints .* --resume"):
        train(tiny_config(finished_run, data_dir))


def test_resume_refuses_another_trajectory(finished_run, data_dir, tmp_path) -> None:
    run_dir = _copy(finished_run, tmp_path)
    with pytest.raises(ConfigError, match=r"differs .* in optim"):
        train(tiny_config(run_dir, data_dir, **{"optim.lr": 1e-3}), resume=True)
    # what does not change the weights may change
    train(tiny_config(run_dir, data_dir, **{"eval.every": 2, "checkpoint.keep_last": 1}), resume=True)


def test_resume_without_checkpoint_starts_fresh(data_dir, tmp_path, capsys) -> None:
    train(tiny_config(tmp_path / "new", data_dir, **{"train.steps": 2}), resume=True)
    assert "no checkpoint in" in capsys.readouterr().err
    assert len(read_metrics(tmp_path / "new")) == 3  # 2 train records + the final eval


def test_model_vocab_smaller_than_the_data_is_refused(data_dir, tmp_path) -> None:
    config = tiny_config(tmp_path / "run", data_dir, **{"model.overrides.vocab_size": 256})
    with pytest.raises(DataMismatchError, match="set the model's vocab_size to 300"):
        train(config)


def test_float64_runs_in_double_precision(data_dir, tmp_path) -> None:
    run_dir = train(tiny_config(tmp_path / "f64", data_dir, **{"precision": "float64", "train.steps": 2}))
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model", dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64
    assert torch.get_num_threads() >= 1


def test_data_with_another_tokenizer_is_refused(data_dir, tmp_path) -> None:
    from tttlm.data import train_tokenizer

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shutil.rmtree(copy / "tokenizer")
    train_tokenizer(["a different text " * 40], copy / "tokenizer", vocab_size=300)
    with pytest.raises(DataMismatchError, match="made with another tokenizer"):
        train(tiny_config(tmp_path / "run", copy))


def test_resume_refuses_changed_data(data_dir, tmp_path) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    config = tiny_config(tmp_path / "run", data, **{"train.steps": 2})
    train(config)
    meta_path = data / "tokens" / "meta.json"  # the same path now holds other tokens
    meta_path.write_text(meta_path.read_text().replace('"sha256": "', '"sha256": "0', 1))
    with pytest.raises(CorruptDataError, match="does not match the sha256"):  # the tokens differ from their record
        train(config, resume=True)
    # unverified, the recorded identity still differs from the checkpoint's
    unverified = tiny_config(tmp_path / "run", data, **{"train.steps": 2, "data.verify_checksums": False})
    with pytest.raises(DataMismatchError, match="changed since"):
        train(unverified, resume=True)
