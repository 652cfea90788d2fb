"""``tttlm bench reference``: what can be checked without ttt-lm-pytorch's ttt.py (which tttlm does not ship)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tttlm.bench.reference import load_reference_module, summarise, tables, time_layer


def test_a_missing_reference_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ttt-lm-pytorch"):
        load_reference_module(tmp_path / "ttt.py")


def test_a_file_without_the_reference_classes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ttt.py"
    path.write_text("class TTTConfig:\n    pass\n")
    with pytest.raises(ValueError, match="has no TTTLinear"):
        load_reference_module(path)


def test_our_side_is_timed_with_the_projection_floor() -> None:
    record = time_layer("tttlm", Path("unused"), "linear", "tiny", 32, "backward", repeats=1)
    assert record["impl"] == "tttlm"
    assert record["mode"] == "backward"
    assert record["min_ms"] > 0
    assert record["projections_ms"] > 0
    assert record["projection_gflop_per_s"] > 0


def _record(impl: str, ms: float, round_: int) -> dict:
    case = {"inner": "linear", "mode": "forward", "size": "125m", "seq_len": 2048}
    return {**case, "impl": impl, "min_ms": ms, "projections_ms": 100.0, "round": round_}


def test_the_summary_takes_the_median_of_the_rounds_ratios() -> None:
    records = [{"check": "linear", "max_abs_diff": 1e-6}]
    for round_, (ref, ours) in enumerate([(200.0, 100.0), (210.0, 140.0), (190.0, 120.0)]):
        records += [_record("reference", ref, round_), _record("tttlm", ours, round_)]
    (row,) = summarise(records)
    assert row["reference_ms"] == 200.0
    assert row["tttlm_ms"] == 120.0
    assert row["ratio"] == pytest.approx(190 / 120)  # the median of the rounds' ratios 2.0, 1.5, 1.58
    assert (row["ratio_low"], row["ratio_high"]) == (pytest.approx(1.5), pytest.approx(2.0))
    assert row["best_ratio"] == pytest.approx(2.0)
    assert row["max_abs_diff"] == 1e-6
    (table,) = tables(records)
    assert table.rows[0][:2] == ["TTT-Linear", "forward"]
    assert "1.58x" in table.rows[0][6]
