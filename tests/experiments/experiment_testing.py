"""A minimal valid experiment spec as plain data, for the tests to change one thing at a time."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# a TTT-Linear small enough that a training step takes milliseconds
TINY_MODEL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}

BASE: dict[str, Any] = {
    "name": "toy",
    "title": "a toy experiment",
    "paper": "a paper, Figure 1",
    "summary": "two TTT-Linears that differ in b",
    "vocab_size": 300,
    "train_config": {
        "device": "cpu",
        "threads": 1,
        "model": {"size": "tiny", "overrides": TINY_MODEL},
        "data": {"seq_len": 32},
        "train": {"steps": {"cpu": 1, "paper": 10}, "batch_tokens": 64, "micro_batch_size": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "eval": {"every": 0, "tokens": 64},
        "checkpoint": {"every": 1, "keep_last": 1},
        "log": {"every": 1, "tensorboard": False, "progress": False},
    },
    "arms": [
        {"name": "small-b", "arch": "ttt-linear", "overrides": {"mini_batch_size": 4}},
        {"name": "large-b", "arch": "ttt-linear", "overrides": {"mini_batch_size": 16}},
    ],
    "evaluations": [{"kind": "ppl", "contexts": "train", "documents": 2}],
    "claims": [
        {
            "id": "smaller-b-better",
            "source": "Figure 1",
            "claim": "smaller b, lower perplexity",
            "a": {"arm": "small-b", "metric": "ppl@train"},
            "b": {"arm": "large-b", "metric": "ppl@train"},
            "expect": "<",
        }
    ],
}


def base_spec() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def write_spec(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path
