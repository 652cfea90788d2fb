"""Records files while a benchmark runs: every ``tttlm bench`` command rewrites its JSON after each case, so a run
interrupted by Ctrl-C keeps what it measured; files are written atomically with the umask's mode; the default
prefill and decode runs stay small (their measured times are in the README; wall time is not tested here)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from tttlm.bench import decode, e2e, forms, kernels, memory, prefill, roofline, train
from tttlm.bench.cases import expand_cases
from tttlm.bench.records import RecordsFile, write_records
from tttlm.bench.report import render
from tttlm.cli import build_parser, main

TINY = ["--sizes", "tiny", "--threads", "1"]


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _interrupt_call(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, call: int) -> None:
    """Make the ``call``-th call of ``module.name`` raise KeyboardInterrupt (as Ctrl-C would during it)."""
    real = getattr(module, name)
    calls = 0

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)


# (command, the function called once per case (or per model for e2e), the records kept when its 3rd call is
# interrupted: those of the first two cases)
INTERRUPTED = {
    "prefill": (
        ["bench", "prefill", "--archs", "ttt-linear,transformer", *TINY, "--contexts", "16,32", "--repeats", "1",
         "--warmup", "0", "--in-process"],
        (prefill, "measure_case"),
        [("ttt-linear", 16), ("ttt-linear", 32)],
    ),
    "decode": (
        ["bench", "decode", "--archs", "ttt-linear,transformer", *TINY, "--contexts", "16,32", "--tokens", "1",
         "--warmup", "0", "--prefill-chunk", "16"],
        (decode, "_measure"),
        [("ttt-linear", 16), ("ttt-linear", 32)],
    ),
    "train": (
        ["bench", "train", "--archs", "ttt-linear,transformer,gated-deltanet", *TINY, "--seq-len", "16", "--steps",
         "1", "--in-process", "--peak-sizes", "16", "--no-split"],
        (train, "_measure"),
        [("ttt-linear", 16), ("transformer", 16)],
    ),
    "forms": (
        ["bench", "forms", "--seqs", "8", "--mini-batch-sizes", "4", "--ops", "ttt_linear", "--heads", "1",
         "--head-dim", "4", "--repeats", "1", "--warmup", "0", "--peak-sizes", "16", "--no-split"],
        (forms, "time_call"),
        [("ttt_linear", 8), ("ttt_linear", 8)],
    ),
    "kernels": (
        ["bench", "kernels", "--layers", "ttt-linear,attention", "--forms", "dual", "--modes", "prefill", *TINY,
         "--contexts", "16,32", "--repeats", "1", "--warmup", "0", "--device", "cpu"],
        (kernels, "_measure"),
        [("ttt-linear", 16), ("ttt-linear", 32)],
    ),
    "roofline": (
        ["bench", "roofline", "--ops", "ttt_linear", "--seqs", "16,32", "--mini-batch-sizes", "4", "--head-dims",
         "4", "--heads", "1", "--peak-sizes", "16", "--bandwidth-mb", "0.01", "--repeats", "1", "--warmup", "0"],
        (roofline, "time_dual"),
        # the roof (one GEMM size, the copy and add kernels), then the first two cases
        [("matmul_peak", None), ("bandwidth", None), ("bandwidth", None), ("ttt", 16), ("ttt", 16)],
    ),
    "e2e": (
        # records per size, after its models' rounds: the 3rd model built is the first of 125m
        ["bench", "e2e", "--sizes", "tiny,125m", "--seq", "16", "--window", "8", "--mini-batch-sizes", "4",
         "--meta-gradients", "first_order", "--repeats", "1", "--warmup", "0", "--threads", "1"],
        (e2e, "build"),
        [("swa", 16), ("ttt-e2e", 16)],
    ),
    "memory": (
        ["bench", "memory", *TINY, "--seqs", "16,32,48", "--window", "8", "--mini-batch", "4", "--remats", "none"],
        (memory, "measure_case"),
        [("tiny", 16), ("tiny", 32)],
    ),
}  # fmt: skip


def _key(record: dict[str, Any]) -> tuple[object, object]:
    """What identifies a record of any benchmark in ``INTERRUPTED``: its model or kind, and its length."""
    name = next(record[k] for k in ("arch", "layer", "kind", "op", "model") if k in record)
    if record.get("kind") in ("matmul_peak", "bandwidth"):
        return name, None
    length = next(record[k] for k in ("context", "seq_len", "T", "seq") if k in record)
    return name, length


@pytest.mark.parametrize("bench", list(INTERRUPTED))
def test_an_interrupted_run_keeps_what_it_measured(
    bench: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, (module, name), kept = INTERRUPTED[bench]
    path = tmp_path / f"{bench}.json"
    argv = [*argv, "--json", str(path)]
    if bench in ("roofline", "kernels"):
        argv += ["--plot" if bench == "roofline" else "--png", str(tmp_path / "figure.png")]
    _interrupt_call(monkeypatch, module, name, 3)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    payload = json.loads(path.read_text())  # valid JSON, never half a file
    assert payload["benchmark"] == bench
    assert payload["argv"] == argv
    assert payload["complete"] is False
    assert [_key(r) for r in payload["records"]] == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left, no figure
    err = capsys.readouterr().err
    assert "interrupted after" in err
    assert f"keeps the {len(kept)} records measured" in err
    assert "[2/" in err  # a line per finished case


def test_the_file_holds_every_finished_case_while_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prefill.json"
    seen = []
    real = prefill.measure_case

    def measure(*args: Any) -> prefill.PrefillRecord:
        seen.append(len(json.loads(path.read_text())["records"]) if path.exists() else 0)
        return real(*args)

    monkeypatch.setattr(prefill, "measure_case", measure)
    argv = ["bench", "prefill", "--archs", "transformer", *TINY, "--contexts", "8,16,24", "--repeats", "1"]
    assert main([*argv, "--warmup", "0", "--in-process", "--json", str(path)]) == 0
    assert seen == [0, 1, 2]
    payload = json.loads(path.read_text())
    assert payload["complete"] is True
    assert [r["context"] for r in payload["records"]] == [8, 16, 24]


def test_a_refused_command_leaves_an_earlier_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "prefill.json"
    path.write_text("earlier")
    assert main(["bench", "prefill", "--warmup", "-1", "--in-process", "--json", str(path)]) == 2
    assert path.read_text() == "earlier"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_are_created_with_the_umask(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        path = tmp_path / "new" / "records.json"
        out = RecordsFile("sweep", path)
        out.add([{"x": 1}])
        out.add([{"x": 2}])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert path.parent.stat().st_mode & 0o777 == 0o777 & ~umask
    assert json.loads(path.read_text())["records"] == [{"x": 1}, {"x": 2}]


def test_the_report_says_a_file_is_partial(tmp_path: Path) -> None:
    write_records("sweep", [{"x": 1}], tmp_path / "done.json")
    write_records("sweep", [{"x": 2}], tmp_path / "stopped.json", complete=False)
    text = render(tmp_path, tmp_path / "BENCH.md")
    done, stopped = text.split("## sweep: `stopped.json`")
    assert "Partial" not in done
    assert "Partial: the run stopped before its last case (1 record here)." in stopped


@pytest.mark.parametrize(("bench", "cases"), [("prefill", 7 * 5), ("decode", 7 * 4)])
def test_the_default_runs_stay_small(bench: str, cases: int) -> None:
    # measured on 2 CPU cores: about a minute each (README); the papers' 125m sweeps take --sizes 125m
    args = build_parser().parse_args(["bench", bench])
    assert args.sizes == ["tiny"]
    assert len(expand_cases(args.archs, args.sizes, args.ttt_forms)) * len(args.contexts) == cases
