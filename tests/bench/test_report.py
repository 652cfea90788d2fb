"""``tttlm bench report``: docs/BENCHMARKS.md is exactly what the committed records regenerate; sections, notes,
figures, generic tables and errors on synthetic records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tttlm.bench.records import write_records
from tttlm.bench.report import render
from tttlm.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_committed_document_is_regenerated_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the document names the results directory relative to the repository
    expected = Path("docs/BENCHMARKS.md").read_text()
    assert render(Path("docs/results/bench"), Path("docs/BENCHMARKS.md")) == expected, (
        "docs/BENCHMARKS.md is out of date: run `tttlm bench report` (prose goes in docs/results/bench/notes/)"
    )


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    train = {
        "arch": "ttt-linear", "size": "tiny", "parameters": 143336, "seq_len": 512, "batch": 1,
        "tokens_per_s": 7985.2, "seconds_per_step": 0.0641, "peak_rss_mb": 496.5, "steps": 2, "threads": 1,
    }  # fmt: skip
    write_records("train", [train], results / "train-a.json", ["bench", "train", "--json", "train-a.json"])
    other = [{"kernel": "gemm", "gflops": 41.5, "note": None}, {"kernel": "copy", "gflops": 3.25, "note": "a|b"}]
    write_records("sweep", other, results / "sweep-cpu.json")
    (results / "sweep-cpu.png").write_bytes(b"\x89PNG")
    (results / "notes").mkdir()
    (results / "notes" / "_intro.md").write_text("# Speed\n\nIntro.\n")
    (results / "notes" / "_train.md").write_text("## Training\n\nOpening.\n")
    (results / "notes" / "train-a.md").write_text("### A\n\nBefore.\n\n{{results}}\n\nAfter.\n")
    return results


def test_sections_notes_figures_and_generic_tables(tmp_path: Path) -> None:
    results = _results(tmp_path)
    text = render(results, tmp_path / "docs" / "BENCH.md")
    assert text.startswith("# Speed\n\nIntro.\n")
    # train (a known benchmark) comes before sweep, opened by its notes; the file's notes wrap the generated part
    parts = ("Opening.", "Before.", "tttlm bench train", "| 7,985 |", "After.", "## sweep: `sweep-cpu.json`")
    positions = [text.index(s) for s in parts]
    assert positions == sorted(positions)
    assert "Machine: " in text
    # an unknown benchmark: every set key a column, "|" escaped, the figure linked relative to the document
    assert "| kernel | gflops | note |" in text
    assert "| copy | 3.25 | a\\|b |" in text
    assert "![sweep-cpu](../results/sweep-cpu.png)" in text


def test_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, out = _results(tmp_path), tmp_path / "BENCH.md"
    args = ["bench", "report", "--results", str(results), "--out", str(out)]
    assert main([*args, "--check"]) == 1  # not written yet
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    out.write_text(out.read_text() + "hand edit\n")
    assert main([*args, "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_bad_inputs_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _results(tmp_path)
    (results / "notes" / "train-a.md").write_text("## Training, no placeholder\n")
    assert main(["bench", "report", "--results", str(results), "--out", str(tmp_path / "x.md")]) == 2
    assert "must contain the line {{results}}" in capsys.readouterr().err
    (results / "notes" / "train-a.md").unlink()
    (results / "broken.json").write_text(json.dumps({"records": []}))
    assert main(["bench", "report", "--results", str(results), "--out", str(tmp_path / "x.md")]) == 2
    assert "missing benchmark, machine" in capsys.readouterr().err
    assert main(["bench", "report", "--results", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
