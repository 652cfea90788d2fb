"""Fixtures of the bad-input suite: the trainer tests' tiny data and configs (``tests/train/train_testing.py``), one
finished tiny run to copy and break, and data packed with another tokenizer of the same vocabulary size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# reuse the trainer tests' helpers rather than a second copy of them
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

from shared_fixtures import _private_cache, _single_thread
from synthetic_data import make_synthetic_data_dir
from train_testing import make_data_dir, tiny_config, write_config

from tttlm.train import train

__all__ = ["_private_cache", "_single_thread"]

# the settings of every run here: 4 steps, a checkpoint every 2 (so a run has step-2 and step-4)
STEPS = {"train.steps": 4, "checkpoint.every": 2, "checkpoint.keep_last": 3}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("bad-data"), documents=10, words=400)


@pytest.fixture(scope="session")
def other_tokenizer_data(tmp_path_factory) -> Path:
    """Data packed with another 300-token BPE (other text), so only the tokenizer's identity tells it apart."""
    return make_synthetic_data_dir(
        tmp_path_factory.mktemp("other-data"), 10, 400, vocabulary=20, sentence_end=0.3, val_fraction=0.3
    )


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, data_dir) -> Path:
    """A run directory as a finished ``tttlm train`` leaves it (checkpoints step-2 and step-4, model/); tests that
    change it work on a copy (``copy_run``)."""
    run = tmp_path_factory.mktemp("runs") / "finished"
    train(tiny_config(run, data_dir, **STEPS))
    return run


@pytest.fixture
def config_for(tmp_path, data_dir):
    """``config_for(run_dir, **changes)`` -> a YAML config of the suite's tiny run writing to ``run_dir``."""

    def make(run_dir: Path, data: Path | None = None, **changes) -> Path:
        config = tiny_config(run_dir, data or data_dir, **{**STEPS, **changes})
        return write_config(tmp_path / f"{run_dir.name}.yaml", config)

    return make
