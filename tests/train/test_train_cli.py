"""``tttlm train`` on the command line."""

from __future__ import annotations

import pytest
from train_testing import tiny_config, write_config

from tttlm.cli import main
from tttlm.train import read_metrics


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: tttlm train" in out
    assert "--resume" in out


def test_train_with_set(data_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", data_dir))
    assert main(["train", "--config", str(path), "--set", "train.steps=2", "--no-progress"]) == 0
    assert "run directory:" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"] == [1, 2]


def test_errors_are_reported(data_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", data_dir))
    assert main(["train", "--config", str(path), "--set", "train.micro_batch_size=3"]) == 2
    assert "cannot be split into micro-batches of 3" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--set", f"data.dir={tmp_path / 'nodata'}"]) == 2
    assert "tttlm data prepare" in capsys.readouterr().err
