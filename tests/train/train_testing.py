"""Helpers for the trainer tests: a small packed data directory and tiny training configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthetic_data import WORDS, make_synthetic_data_dir

from tttlm.train.config import TrainConfig, config_from_dict


def make_data_dir(out: Path, documents: int = 16, words: int = 600) -> Path:
    """A data directory (corpus, 300-token BPE, packed tokens) from deterministic pseudo-English."""
    return make_synthetic_data_dir(out, documents, words, len(WORDS), sentence_end=0.1, val_fraction=0.15)


# a TTT-Linear small enough that a step takes milliseconds
TINY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "mini_batch_size": 8,
}


def tiny_config(run_dir: Path, data_dir: Path, **changes: Any) -> TrainConfig:
    """A training config of 6 steps: 4 sequences of 32 tokens per step (2 micro-steps of 2), eval and checkpoints.

    ``changes`` are dotted keys, e.g. ``tiny_config(..., **{"train.steps": 3})``.
    """
    raw: dict[str, Any] = {
        "name": "test",
        "out_dir": str(run_dir),
        "seed": 0,
        "device": "cpu",
        "threads": 1,
        "model": {"arch": "ttt-linear", "size": "tiny", "overrides": dict(TINY_MODEL)},
        "data": {"dir": str(data_dir), "seq_len": 32},
        "train": {"steps": 6, "batch_tokens": 128, "micro_batch_size": 2},
        "optim": {"lr": 3e-3, "min_lr": 1e-4, "warmup_steps": 2},
        "eval": {"every": 3, "tokens": 128},
        "checkpoint": {"every": 2, "keep_last": 2},
        "log": {"every": 1, "tensorboard": False, "progress": False},
    }
    overrides = [f"{key}={value}" for key, value in changes.items()]
    return config_from_dict(raw, overrides=overrides)


def write_config(path: Path, config: TrainConfig) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path
