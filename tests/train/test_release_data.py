"""The TTT-E2E release's data settings for every arch: separator (BOS) targets left out of the loss
(``data.mask_bos_targets``) and only documents of at least ``data.min_document_tokens`` tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_testing import make_data_dir, tiny_config

from tttlm.data.packing import PackedDataset
from tttlm.train.config import ConfigError
from tttlm.train.loop import targets, train


def test_targets_mask_only_the_separator() -> None:
    batch = torch.tensor([[5, 0, 7, 0], [0, 3, 3, 9]])
    assert torch.equal(targets(batch, None), batch)
    assert targets(batch, 0).tolist() == [[5, -100, 7, -100], [-100, 3, 3, 9]]


def test_long_documents_keeps_whole_documents_back_to_back(data_dir: Path) -> None:
    split = PackedDataset(data_dir, "train")
    lengths = np.diff(split.offsets)
    threshold = int(np.median(lengths))
    kept = split.long_documents(threshold)
    wanted = [i for i, n in enumerate(lengths) if n >= threshold]
    assert 0 < kept.num_documents == len(wanted) < split.num_documents
    assert np.array_equal(kept.tokens, np.concatenate([split.document(i) for i in wanted]))
    assert all(np.array_equal(kept.document(j), split.document(i)) for j, i in enumerate(wanted))


def test_a_run_with_the_release_data_settings_trains_and_logs_what_it_kept(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = PackedDataset(data_dir, "train")
    threshold = int(np.median(np.diff(split.offsets)))
    config = tiny_config(
        tmp_path / "run",
        data_dir,
        **{"train.steps": 2, "data.mask_bos_targets": True, "data.min_document_tokens": threshold},
    )
    train(config)
    captured = capsys.readouterr()
    assert f"documents have >= {threshold} tokens" in captured.out + captured.err
    with pytest.raises(ConfigError, match="no document of the train split is that long"):
        train(tiny_config(tmp_path / "none", data_dir, **{"data.min_document_tokens": 10**9}))


def test_masking_changes_the_loss(tmp_path: Path) -> None:
    # same seed, same windows: the first step's loss differs with the mask (short documents: separators in every
    # window)
    data_dir = make_data_dir(tmp_path / "short", documents=40, words=15)
    losses = {}
    for masked in (False, True):
        changes = {"train.steps": 1, "optim.warmup_steps": 0, "data.mask_bos_targets": masked}
        run = train(tiny_config(tmp_path / str(masked), data_dir, **changes))
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[masked] = next(r["loss"] for r in records if "loss" in r)
    assert losses[False] != losses[True]
