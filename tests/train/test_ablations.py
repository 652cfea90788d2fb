"""``tttlm ablations`` end to end on a tiny prepared data directory: the ladder's configs, the runs, the report."""

from __future__ import annotations

import itertools
import json

import pytest

from tttlm.ablations import ladder, minibatch_sweep
from tttlm.cli import main
from tttlm.models import load

# data_dir (a tiny prepared data directory) and a private TTTLM_CACHE come from tests/train/conftest.py


def test_ladder_adds_one_switch_per_row() -> None:
    rows = ladder(256)
    assert rows[0].overrides == {
        "mini_batch_size": 256, "ttt_inner_norm": False, "ttt_learn_init": False, "ttt_learn_lr": False,
    }  # fmt: skip
    for above, row in itertools.pairwise(rows):
        changed = {k for k in row.overrides if above.overrides.get(k) != row.overrides[k]}
        assert len(changed) == 1, row.label
    assert rows[-2].overrides == {
        **rows[0].overrides,
        "mini_batch_size": 16,
        **dict.fromkeys(list(rows[0].overrides)[1:], True),
    }
    assert rows[-1].overrides["backbone"] == "mamba"
    # b = 16 of the sweep is the published TTT-Linear, trained once as the ladder's row 5
    assert [v.name for v in minibatch_sweep([4, 16])] == ["minibatch-4", rows[4].name]


def test_ablations_train_every_variant_and_write_the_report(tmp_path, data_dir) -> None:
    out = tmp_path / "ablations"
    argv = ["ablations", "--out", str(out), "--data", str(data_dir), "--steps", "2", "--seq-len", "32"]
    assert main([*argv, "--mini-batch-sizes", "4,16", "--timing-seq-len", "48"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["ladder"]) == 6
    assert [p["mini_batch_size"] for p in results["minibatch"]] == [4, 16]
    assert all(p["forward_ms_per_token"] > 0 for p in results["minibatch"])
    first = load(out / "ladder-1-linear-attention" / "model").config
    assert (first.mini_batch_size, first.ttt_inner_norm, first.ttt_learn_init, first.ttt_learn_lr) == (
        32,
        False,
        False,
        False,
    )
    assert load(out / "ladder-6-mamba-backbone" / "model").config.backbone == "mamba"
    report = (out / "report.md").read_text()
    assert "+ learnable W0" in report
    assert "| 4 |" in report
    for png in ("training.png", "minibatch.png"):
        assert (out / png).stat().st_size > 10_000
    assert not (out / "minibatch-16").exists()


def test_ablations_reject_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablations", "--timing-seq-len", "0"]) == 2
    assert "--timing-seq-len must be >= 1" in capsys.readouterr().err
