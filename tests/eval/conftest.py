"""Fixtures of the evaluation tests: one small prepared data directory and a tiny trained-looking run."""

from __future__ import annotations

import pytest
import torch
from eval_testing import TINY, make_data_dir
from shared_fixtures import _private_cache, _single_thread

from tttlm.models import build

__all__ = ["_private_cache", "_single_thread"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("eval-data"))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, data_dir):
    """A run directory as the trainer leaves it: model/ (with the tokenizer), config.yaml, metrics.jsonl."""
    import json
    import shutil

    run = tmp_path_factory.mktemp("runs") / "tiny-ttt"
    torch.manual_seed(0)
    model = build("ttt-linear", "tiny", vocab_size=300, mini_batch_size=8, **TINY)
    model.save_pretrained(run / "model")
    for file in (data_dir / "tokenizer").iterdir():
        shutil.copy2(file, run / "model" / file.name)
    (run / "config.yaml").write_text(f"name: tiny-ttt\ndata:\n  dir: {data_dir}\n  seq_len: 32\n")
    records = [{"step": s, "kind": "train", "loss": 6 - s, "tokens": 128 * s} for s in range(1, 5)]
    records.append({"step": 4, "kind": "eval", "val_loss": 2.5, "val_ppl": 12.2})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run
