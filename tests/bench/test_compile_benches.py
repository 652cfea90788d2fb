"""``--compile`` of ``tttlm bench train|prefill|decode``: every case measured eager and compiled, the records say
which (``compiled``, ``backend``, ``compile_s``, ``graphs``), an arch that cannot run compiled is recorded as
skipped with the reason, and records written before ``--compile`` existed still make the same tables.

The compiled cases use ``aot_eager`` (traced graphs on eager kernels: seconds, where inductor takes minutes here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tttlm.bench import decode, prefill, train
from tttlm.cli import main

COMMON = ["--sizes", "tiny", "--threads", "1", "--compile", "--compile-backend", "aot_eager"]


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text())["records"]


def test_train_bench_measures_eager_and_compiled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.json"
    argv = ["bench", "train", "--archs", "swa,ttt-e2e", *COMMON, "--seq-len", "32", "--steps", "1", "--in-process"]
    assert main([*argv, "--peak-sizes", "16", "--no-split", "--json", str(path)]) == 0
    records = _records(path)
    assert [(r["arch"], r.get("compiled", False)) for r in records] == [
        ("swa", False), ("swa", True), ("ttt-e2e", False), ("ttt-e2e", True),
    ]  # fmt: skip
    eager, compiled, e2e, e2e_compiled = records
    assert eager["compile_s"] is None
    assert eager["backend"] is None
    assert compiled["backend"] == "aot_eager"
    assert compiled["compile_s"] > 0
    assert compiled["graphs"] >= 1
    assert compiled["graph_breaks"] == 0
    assert compiled["tokens_per_s"] > 0
    assert "double backward" in e2e_compiled["skipped"]
    assert e2e["skipped"] is None
    out = capsys.readouterr().out
    assert "swa (compiled)" in out
    assert "eager against compiled" in out
    assert "double backward" in out


def test_prefill_and_decode_benches_measure_eager_and_compiled(tmp_path: Path) -> None:
    path = tmp_path / "prefill.json"
    argv = ["bench", "prefill", "--archs", "swa", *COMMON, "--contexts", "24", "--chunk-size", "16"]
    assert main([*argv, "--repeats", "1", "--warmup", "1", "--in-process", "--json", str(path)]) == 0
    eager, compiled = _records(path)
    assert (eager["compiled"], compiled["compiled"]) == (False, True)
    assert compiled["skipped"] is None
    assert compiled["compile_s"] > 0
    assert compiled["graphs"] >= 1
    assert compiled["ms_per_token"] > 0

    path = tmp_path / "decode.json"
    argv = ["bench", "decode", "--archs", "swa", *COMMON, "--contexts", "16", "--tokens", "2", "--warmup", "1"]
    assert main([*argv, "--prefill-chunk", "16", "--json", str(path)]) == 0
    eager, compiled = _records(path)
    assert (eager["compiled"], compiled["compiled"]) == (False, True)
    assert compiled["skipped"] is None
    assert compiled["graphs"] >= 1
    assert compiled["ms_per_token"] > 0
    assert eager["cache_mb"] == compiled["cache_mb"]  # the same prefill (eager) before the decode steps


def test_old_records_make_the_same_tables() -> None:
    """Records written before --compile existed have none of its fields: they read as eager, with no compile
    table (so ``tttlm bench report`` regenerates the same document from them)."""
    old_train = {
        "arch": "ttt-linear", "size": "tiny", "parameters": 1000, "seq_len": 64, "batch": 1, "tokens_per_s": 10.0,
        "seconds_per_step": 6.4, "peak_rss_mb": 100.0, "steps": 2, "threads": 1, "flops_per_token": None,
        "gflop_per_s": None,
    }  # fmt: skip
    (table,) = train.tables([old_train])
    assert table.rows[0][0] == "ttt-linear"
    assert prefill.label({"arch": "ttt-linear", "form": "dual"}) == "ttt-linear (dual)"
    assert prefill.label({"arch": "ttt-linear", "form": "dual", "compiled": True}) == "ttt-linear (dual) compiled"
    assert decode.label({"arch": "swa", "form": None}) == "swa"
    # a crossover is read from the eager records only
    records = [
        {"arch": arch, "form": None, "size": "tiny", "context": c, "ms_per_token": ms, "compiled": compiled}
        for arch, compiled, times in (
            ("swa", False, {1: 1.0, 2: 3.0}), ("swa", True, {1: 0.1, 2: 0.1}), ("transformer", False, {1: 2.0, 2: 2.0}),
        )
        for c, ms in times.items()
    ]  # fmt: skip
    assert prefill.crossover(records, "swa", "transformer", "tiny").ratios == {1: 0.5, 2: 1.5}
