"""``tttlm eval ppl|by-position|niah``, ``tttlm generate`` and ``tttlm compare`` end to end on a tiny run."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tttlm.cli import main

HELP = [
    ["eval", "--help"],
    ["eval", "ppl", "--help"],
    ["eval", "by-position", "--help"],
    ["eval", "niah", "--help"],
    ["generate", "--help"],
    ["compare", "--help"],
]


@pytest.mark.parametrize("argv", HELP)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: tttlm" in capsys.readouterr().out


def test_ppl(run_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ppl"
    assert (
        main(["eval", "ppl", "--ckpt", str(run_dir), "--contexts", "32,128,100000", "--chunk", "24", "--out", str(out)])
        == 0
    )
    captured = capsys.readouterr()
    assert "skipped context 100000" in captured.err
    payload = json.loads((out / "ppl.json").read_text())
    assert [r["context"] for r in payload["results"]] == [32, 128]
    assert payload["skipped"] == [100000]
    assert (out / "ppl.png").stat().st_size > 0
    assert "| 128 |" in (out / "ppl.md").read_text()


def test_ppl_writes_into_the_run_and_model_dirs_work(run_dir, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "ppl", "--ckpt", str(run_dir / "model"), "--contexts", "64"]) == 0
    assert (run_dir / "eval" / "ppl.json").exists()  # a run's final model reports into the run


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "ppl", "--ckpt", "/nonexistent/run"], "does not exist"),
        (["eval", "ppl", "--contexts", "100000"], "the longest has"),
        (["eval", "by-position", "--length", "100000"], "smaller --length"),
        (["eval", "niah", "--lengths", "20"], "too short"),
        (["eval", "niah", "--distance-edges", "128,64"], "ascending"),
        (["generate", "--ckpt", "/nonexistent/run", "--prompt", "x"], "does not exist"),
        (["compare", "/nonexistent/run"], "does not exist"),
    ],
)
def test_errors(run_dir, argv, message, capsys: pytest.CaptureFixture[str]) -> None:
    if "--ckpt" not in argv and argv[0] != "compare":
        argv = [*argv, "--ckpt", str(run_dir)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_not_a_checkpoint(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "ppl", "--ckpt", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"), [("--tasks", "s-niah-7", "choose from"), ("--depths", "0.5,2", "in [0, 1]")]
)
def test_bad_arguments(option, value, message, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "niah", "--ckpt", "x", option, value])
    assert message in capsys.readouterr().err


def test_by_position_with_reference(run_dir, tmp_path) -> None:
    out = tmp_path / "pos"
    argv = ["eval", "by-position", "--ckpt", str(run_dir), "--ref", str(run_dir), "--length", "100", "--out", str(out)]
    assert main(argv) == 0
    with open(out / "by_position.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 100
    assert list(rows[0]) == ["position", "tiny-ttt", "tiny-ttt#1", "delta_tiny-ttt"]
    assert all(float(r["delta_tiny-ttt"]) == 0 for r in rows)  # the same model as its own reference
    assert (out / "by_position.png").stat().st_size > 0


def test_niah(run_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "niah"
    argv = ["eval", "niah", "--ckpt", str(run_dir), "--lengths", "700,800", "--samples", "2", "--out", str(out)]
    assert main([*argv, "--distance-edges", "64,128", "--depths", "0.5"]) == 0
    payload = json.loads((out / "niah.json").read_text())
    cells = payload["by_distance"]["s-niah-2"]["800"]
    assert [(c["low_distance"], c["high_distance"]) for c in cells] == [(0, 64), (64, 128), (128, None)]
    assert sum(c["n"] for c in cells) == 2
    assert set(payload["accuracy"]) == {"s-niah-1", "s-niah-2", "s-niah-3"}
    assert payload["split"] == "test"  # the essay haystack: documents no model trained or validated on
    assert len(payload["records"]) == 3 * 2 * 2
    assert payload["intervals"]["s-niah-1"]["700"]["n"] == 2
    markdown = (out / "niah.md").read_text()
    assert "| method | s-niah-1 700 | s-niah-1 800 |" in markdown
    assert "[95% Wilson interval]" in markdown
    assert "| s-niah-1 | 700 | 64 < d <= 128 |" in markdown
    assert (out / "niah.png").stat().st_size > 0


def test_generate(run_dir, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--ckpt", str(run_dir), "--prompt", "the lord", "--max-new-tokens", "8", "--no-stop"]
    assert main([*argv, "--temperature", "0"]) == 0
    greedy = capsys.readouterr().out
    assert greedy.startswith("the lord")
    assert len(greedy) > len("the lord")
    assert main([*argv, "--seed", "5", "--top-k", "20", "--top-p", "0.9"]) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--seed", "5", "--top-k", "20", "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out == first


def test_compare(run_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "ppl", "--ckpt", str(run_dir), "--contexts", "32,64"]) == 0
    assert (
        main(["eval", "niah", "--ckpt", str(run_dir), "--lengths", "700", "--samples", "1", "--tasks", "s-niah-1"]) == 0
    )
    bare = tmp_path / "bare"
    bare.mkdir()
    out = tmp_path / "report"
    assert main(["compare", str(run_dir), str(bare), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for section in ("## Training curves", "## Perplexity vs context", "## S-NIAH", "## Not found"):
        assert section in report
    assert "![loss vs tokens](training_tokens.png)" in report
    assert (out / "training_tokens.png").exists()
    assert (out / "training_flops.png").exists()
    assert (out / "ppl.png").exists()
    assert "bare: metrics.jsonl" in report
    assert "![S-NIAH heatmaps](niah.png)" in report
    assert (out / "niah.png").stat().st_size > 5_000


def test_compare_with_a_reference_gives_the_loss_delta_by_position(run_dir, tmp_path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)
    for run in (run_dir, twin):
        assert main(["eval", "by-position", "--ckpt", str(run), "--length", "40"]) == 0
    out = tmp_path / "report"
    assert main(["compare", str(run_dir), str(twin), "--ref", str(twin), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "tokens 1–16 | tokens 17–40 | mean over 40" in report
    assert "Loss Δ = loss − loss of twin" in report
    delta_table = report.split("Loss Δ")[1]
    delta_row = next(line for line in delta_table.splitlines() if line.startswith(f"| {run_dir.name} |"))
    assert delta_row == f"| {run_dir.name} | 0.000 | 0.000 | 0.000 |"  # the same model: zero difference in every range
    assert main(["compare", str(run_dir), "--ref", "elsewhere", "--out", str(out)]) == 2
