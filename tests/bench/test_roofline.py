"""``tttlm bench roofline``: the analytical FLOP count of the dual form is exact; the command writes JSON + PNG."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tttlm.bench.forms import FormsSetting, make_call, make_inputs
from tttlm.bench.roofline import Roof, compulsory_bytes, dual_matmul_flops
from tttlm.cli import main


@pytest.mark.parametrize("op", ["ttt_linear", "ttt_mlp"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize(("seq", "mini_batch"), [(24, 4), (16, 16), (6, 1)])
def test_dual_flops_match_flop_counter(op: str, pass_: str, seq: int, mini_batch: int) -> None:
    setting = FormsSetting(batch=2, heads=3, head_dim=8)
    call = make_call(op, "dual", pass_, make_inputs(op, seq, mini_batch, setting), mini_batch)
    with FlopCounterMode(display=False) as counter:
        call()
    assert counter.get_total_flops() == dual_matmul_flops(op, pass_, seq, mini_batch, 8, batch=2, heads=3)


def test_flops_and_bytes_refuse_or_scale() -> None:
    with pytest.raises(ValueError, match="multiple"):
        dual_matmul_flops("ttt_linear", "fwd", 10, 4, 8)
    with pytest.raises(ValueError, match="op must be"):
        dual_matmul_flops("attention", "fwd", 8, 4, 8)
    one = compulsory_bytes("ttt_linear", "fwd", 64, 16, 8, batch=1, heads=1)
    assert compulsory_bytes("ttt_linear", "fwd", 64, 16, 8, batch=2, heads=3) == 6 * one
    assert compulsory_bytes("ttt_linear", "fwd+bwd", 64, 16, 8, batch=1, heads=1) > 2 * one
    roof = Roof(peak_gflop_per_s=100.0, bandwidth_gb_per_s=10.0)
    assert roof.attainable(1.0) == 10.0
    assert roof.attainable(50.0) == 100.0


TINY = ["bench", "roofline", "--seqs", "16", "--mini-batch-sizes", "4,8", "--head-dims", "8", "--heads", "2"]
TINY += ["--peak-sizes", "32,64", "--bandwidth-mb", "1", "--repeats", "1", "--warmup", "0"]


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_bench_roofline_writes_json_and_png(tmp_path, capsys: pytest.CaptureFixture[str], clock: str) -> None:
    threads = torch.get_num_threads()
    json_path, png_path = tmp_path / "r.json", tmp_path / "r.png"
    try:
        assert main([*TINY, "--clock", clock, "--json", str(json_path), "--plot", str(png_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "% of peak" in capsys.readouterr().out
    payload = json.loads(json_path.read_text())
    assert payload["benchmark"] == "roofline"
    assert payload["argv"][:2] == ["bench", "roofline"]
    kinds = [r["kind"] for r in payload["records"]]
    assert kinds.count("matmul_peak") == 2
    assert kinds.count("bandwidth") == 2
    assert {r["clock"] for r in payload["records"]} == {clock}
    points = [r for r in payload["records"] if r["kind"] == "ttt"]
    assert len(points) == 2 * 2 * 2  # ops × passes × mini-batch sizes
    peak = max(r["gflop_per_s"] for r in payload["records"] if r["kind"] == "matmul_peak")
    for r in points:
        assert r["peak_gflop_per_s"] == peak
        assert r["fraction_of_peak"] == pytest.approx(r["gflop_per_s"] / peak)
        assert r["gflop_per_s"] == pytest.approx(r["gflops"] / r["seconds"])
        assert r["intensity_flop_per_byte"] == pytest.approx(1e9 * r["gflops"] / r["bytes"])
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--threads", "2"], "cpu clock sees only the calling thread"), (["--seqs", "10"], "multiple of every b")],
)
def test_bench_roofline_refuses_before_measuring(
    tmp_path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    threads = torch.get_num_threads()
    try:
        assert main([*TINY, *extra, "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]) == 2
    finally:
        torch.set_num_threads(threads)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
