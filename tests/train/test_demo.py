"""``tttlm demo`` end to end on a tiny prepared data directory (no network): runs, report, plot, resume."""

from __future__ import annotations

import pytest

from tttlm.cli import main

# data_dir (a tiny prepared data directory) and a private TTTLM_CACHE come from tests/train/conftest.py


def test_demo_trains_both_models_and_writes_the_report(tmp_path, data_dir, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--data", str(data_dir), "--steps", "4", "--seq-len", "32"]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    assert "| ttt-linear |" in report
    assert "| transformer |" in report
    assert "| 4 | 2,048 |" in report  # steps, tokens seen (4 steps x 16 sequences x 32 tokens)
    assert (out / "training.png").stat().st_size > 10_000
    assert "Loss by token index" in report
    assert (out / "by_position.png").stat().st_size > 10_000
    for arch in ("ttt-linear", "transformer"):
        assert (out / arch / "model" / "model.safetensors").exists()
    assert "using the prepared data" in capsys.readouterr().out

    # a second run reuses the finished runs (resume at the last step) and rewrites the same table
    assert main(argv) == 0
    assert "continuing" in capsys.readouterr().out
    assert (out / "report.md").read_text() == report


def test_demo_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
