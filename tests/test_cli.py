"""The console entry point: every sub-command has --help, and ``bench forms`` writes its JSON records."""

import json

import pytest

from tttlm.cli import main


@pytest.mark.parametrize(
    "argv", [["--help"], ["bench", "--help"], ["bench", "forms", "--help"], ["bench", "decode", "--help"]]
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: tttlm" in capsys.readouterr().out


def test_bench_forms_writes_records(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "forms.json"
    argv = ["bench", "forms", "--seqs", "24", "--mini-batch-sizes", "4,8", "--heads", "1", "--head-dim", "8"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--peak-sizes", "16", "--json", str(path)]) == 0
    payload = json.loads(path.read_text())
    records = payload["records"]
    assert payload["benchmark"] == "forms"
    assert "torch" in payload["machine"]
    # 2 ops x 2 b x 2 passes x 2 forms
    assert len(records) == 16
    assert {r["form"] for r in records} == {"primal", "dual"}
    assert {r["pass"] for r in records} == {"fwd", "fwd+bwd"}
    assert all({"op", "form", "T", "b", "pass", "seconds"} <= r.keys() and r["seconds"] > 0 for r in records)
    assert "dual speed-up" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "forms", "--seqs", "0"], "positive integers"),
        (["bench", "forms", "--seqs", "a,b"], "comma-separated integers"),
        (["bench", "forms", "--ops", "ttt_conv"], "choose from"),
    ],
)
def test_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_size_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "forms", "--heads", "0"]) == 2
    assert "--heads must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--max-primal-gb", "--max-naive-gb"])  # the second: the primal form's old name
def test_bench_forms_skips_primal_backward_over_memory_budget(tmp_path, flag: str) -> None:
    path = tmp_path / "forms.json"
    argv = ["bench", "forms", "--seqs", "16", "--mini-batch-sizes", "4", "--heads", "1", "--head-dim", "8"]
    argv += ["--peak-sizes", "16", "--no-split"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", flag, "1e-9", "--json", str(path)]) == 0
    records = json.loads(path.read_text())["records"]
    skipped = [r for r in records if r["skipped"]]
    assert {(r["form"], r["pass"]) for r in skipped} == {("primal", "fwd+bwd")}
    assert all(r["seconds"] is None and "GB" in r["skipped"] for r in skipped)
    assert all(r["seconds"] > 0 for r in records if not r["skipped"])


def test_bench_train_writes_records(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.json"
    argv = ["bench", "train", "--archs", "ttt-linear,transformer", "--sizes", "tiny", "--seq-len", "32"]
    argv += ["--peak-sizes", "16"]
    # in-process: spawning fresh interpreters is slow and fragile on a loaded CI machine
    assert main([*argv, "--steps", "1", "--threads", "1", "--in-process", "--json", str(path)]) == 0
    records = json.loads(path.read_text())["records"]
    assert [r["arch"] for r in records] == ["ttt-linear", "transformer"]
    assert all(r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 50 and r["parameters"] > 0 for r in records)
    assert "tokens/s" in capsys.readouterr().out
