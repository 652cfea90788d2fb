"""Scale-out: the same config under torchrun with 2 CPU processes (gloo) reaches the weights of one process that
accumulates the same global batch.

With batch_tokens = 4 sequences and micro_batch_size = 1, one process runs 4 micro-steps per optimizer step and
each of 2 processes runs 2 (their gradients averaged by DDP, or reduce-scattered by FSDP2): the same samples, only
the order of the floating-point additions differs. The runs use precision float64, where that order changes the
weights after 4 AdamW steps by ~1e-15 (measured: 8e-16 max absolute difference), so 1e-10 is a tight bound that any
real difference (a micro-batch missed or counted twice, a sample read by the wrong process) breaks.
In float32 the same comparison differs by ~1e-7 (Adam divides the tiny summation differences by sqrt(v) ~ |g|).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from train_testing import tiny_config, write_config

from tttlm.train import read_metrics, train
from tttlm.train.checkpoint import list_checkpoints

STEPS = 4


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_match_one_with_accumulation(data_dir, tmp_path, fsdp: bool) -> None:
    settings = {
        "precision": "float64",
        "train.steps": STEPS,
        "train.micro_batch_size": 1,
        "checkpoint.every": 2,
        "eval.every": 2,
        "distributed.fsdp": str(fsdp).lower(),
    }
    single = train(tiny_config(tmp_path / "single", data_dir, **settings))
    config_path = write_config(tmp_path / "multi.yaml", tiny_config(tmp_path / "multi", data_dir, **settings))

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
               "-m", "tttlm.cli", "train", "--config", str(config_path), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 process(es)" in output
    assert "1 sequences x 2 micro-steps x 2 process(es)" in output

    _, single_ckpt = list_checkpoints(single)[-1]
    _, multi_ckpt = list_checkpoints(tmp_path / "multi")[-1]
    expected, got = load_file(single_ckpt / "model.safetensors"), load_file(multi_ckpt / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert got[name].dtype == torch.float64
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-10, msg=name)
    # and the logged curves agree (the loss is averaged over processes)
    for a, b in zip(read_metrics(single), read_metrics(tmp_path / "multi"), strict=True):
        assert a["step"] == b["step"]
        key = "loss" if a["kind"] == "train" else "val_loss"
        assert b[key] == pytest.approx(a[key], rel=1e-10)
    # the checkpoint holds both processes' RNG streams
    assert len(load_file(multi_ckpt / "rng.safetensors")) >= 4
