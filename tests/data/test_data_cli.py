"""``tttlm data prepare`` from the command line, on the user's own files (no network)."""

from __future__ import annotations

import json

import pytest
from data_testing import synthetic_text

from tttlm.cli import main
from tttlm.data import PackedDataset


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "prepare", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: tttlm data" in capsys.readouterr().out


def test_prepare_from_user_files(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    for i in range(6):
        (tmp_path / "in" / f"book{i}.txt").write_text(synthetic_text(i, 120))
    rows = [{"text": synthetic_text(10 + i, 80), "id": f"r{i}"} for i in range(4)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "data"
    argv = [
        "data",
        "prepare",
        "--out",
        str(out),
        "--input",
        str(tmp_path / "in"),
        "--input",
        str(tmp_path / "rows.jsonl"),
    ]
    assert main([*argv, "--vocab-size", "290", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "tokenizer:" in printed
    assert "(vocab 290)" in printed
    assert "documents per source" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["documents"]) == 10
    assert PackedDataset(out, "train").vocab_size == 290


def test_prepare_reports_bad_input(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "prepare", "--out", str(tmp_path / "d"), "--input", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--sources", "gutenberg"])
    assert "choose from shakespeare,milton,austen,bible" in capsys.readouterr().err
