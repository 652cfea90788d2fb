"""Helpers for the trainer tests: a small packed data directory and tiny training configs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tttlm.data import Document, prepare_data
from tttlm.train.config import TrainConfig, config_from_dict

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "that",
    "he",
    "shall",
    "unto",
    "for",
    "his",
    "a",
    "lord",
    "they",
    "be",
    "is",
    "him",
    "not",
    "them",
    "it",
    "with",
    "all",
    "thou",
    "thy",
    "was",
    "god",
    "which",
    "my",
    "me",
    "said",
    "but",
    "ye",
    "their",
    "have",
    "will",
    "thee",
    "from",
    "as",
    "are",
    "when",
    "this",
    "out",
    "were",
    "by",
    "you",
    "up",
    "there",
    "hath",
    "then",
    "people",
    "came",
]


def make_data_dir(out: Path, documents: int = 16, words: int = 600) -> Path:
    """A data directory (corpus, 300-token BPE, packed tokens) from deterministic pseudo-English."""
    docs = []
    for i in range(documents):
        rng = random.Random(i)
        text = " ".join(rng.choice(_WORDS) + ("." if rng.random() < 0.1 else "") for _ in range(words))
        docs.append(Document(id=f"syn/{i:02d}", text=text, source="syn"))
    prepare_data(out, documents=docs, vocab_size=300, val_fraction=0.15, test_fraction=0.1, progress=False)
    return out


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
