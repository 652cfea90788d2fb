"""What ``bench train`` and ``bench forms`` say about efficiency: the matmul peak measured in the run, the fraction
of it, and the profiler's split of a step (kernels per phase + overhead = the step). Fields and arithmetic, not
speed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tttlm.bench import forms, train
from tttlm.bench.efficiency import is_kernel, measure_peak, no_region, profile_split
from tttlm.cli import main

SPLIT = ("forward_s", "backward_s", "optimizer_s", "overhead_s")


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_peak_is_the_best_gemm_of_the_shapes() -> None:
    peak = measure_peak([(16, 16, 16), (64, 32, 48), (16, 16, 16)], torch.float32, "wall", repeats=1, warmup=0)
    assert [(g["m"], g["k"], g["n"]) for g in peak.gemms] == [(16, 16, 16), (64, 32, 48)]  # duplicates once
    assert peak.gflop_per_s == max(g["gflop_per_s"] for g in peak.gemms) > 0
    fields = peak.fields(peak.gflop_per_s / 4)
    assert fields["fraction_of_peak"] == pytest.approx(0.25)
    assert fields["peak_gemm"].endswith(" float32")
    assert peak.fields(None)["fraction_of_peak"] is None


def test_split_adds_up_to_the_call_and_finds_each_phase() -> None:
    a = torch.randn(256, 256, requires_grad=True)

    def call(region=no_region) -> None:
        with region("forward"):
            loss = (a @ a).tanh().sum()
        with region("backward"):
            loss.backward()
        with region("optimizer"), torch.no_grad():
            a.sub_(1e-3 * a.grad)
            a.grad = None

    split = profile_split(call, ("forward", "backward", "optimizer"), seconds=10.0)
    assert set(split.kernels) == {"forward", "backward", "optimizer"}
    assert all(seconds > 0 for seconds in split.kernels.values())
    assert split.kernels["backward"] > split.kernels["optimizer"]  # two 256³ products against an update
    assert sum(split.kernels.values()) + split.overhead == pytest.approx(10.0)
    fields = split.fields(("forward", "backward", "optimizer", "missing"))
    assert fields["missing_s"] is None
    assert fields["profiled_step_s"] > 0
    # a call faster than its kernels (noise): the overhead is 0, not negative
    assert profile_split(call, ("forward", "backward", "optimizer"), seconds=0.0).overhead == 0.0


def test_views_are_not_kernels() -> None:
    from torch.profiler import profile

    x = torch.randn(8, 8)
    with profile() as prof:
        x.t()
        torch.mm(x, x)
    names = {e.name: is_kernel(e) for e in prof.events()}
    assert names["aten::mm"]
    assert not names["aten::t"]
    assert not names["aten::transpose"]


def _check_split(record: dict, total_key: str, phases: tuple[str, ...]) -> None:
    parts = [record[key] for key in phases]
    assert all(part is not None and part >= 0 for part in parts)
    kernels = sum(parts[:-1])
    # the parts add up to the reported time (the overhead is the rest, never negative)
    assert sum(parts) == pytest.approx(max(record[total_key], kernels), rel=1e-9)
    assert record["profiled_step_s"] > 0


def test_train_records_efficiency_and_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.json"
    argv = ["bench", "train", "--archs", "mamba,gated-deltanet", "--sizes", "tiny", "--seq-len", "32", "--steps", "2"]
    argv += ["--threads", "1", "--clock", "cpu", "--peak-sizes", "32", "--in-process", "--json", str(path)]
    assert main(argv) == 0
    records = json.loads(path.read_text())["records"]
    assert [r["arch"] for r in records] == ["mamba", "gated-deltanet"]
    for r in records:
        assert r["clock"] == "cpu"
        assert r["peak_gflop_per_s"] > 0
        assert r["fraction_of_peak"] == pytest.approx(r["gflop_per_s"] / r["peak_gflop_per_s"])
        _check_split(r, "seconds_per_step", SPLIT)
    out = capsys.readouterr().out
    assert "% of peak" in out
    assert "overhead" in out
    assert len(train.tables(records)) == 2


def test_cpu_clock_needs_one_thread(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "train", "--archs", "mamba", "--sizes", "tiny", "--threads", "2", "--clock", "cpu"]
    assert main(argv) == 2
    assert "--threads 1" in capsys.readouterr().err


def test_train_without_split_and_old_records() -> None:
    old = {"arch": "mamba", "size": "tiny", "parameters": 1, "seq_len": 8, "batch": 1, "tokens_per_s": 1.0}
    old |= {"seconds_per_step": 1.0, "peak_rss_mb": 1.0, "flops_per_token": None, "gflop_per_s": None}
    assert len(train.tables([old])) == 1  # a file written before the efficiency fields: the throughput table only


def test_forms_records_efficiency_split_and_primal(tmp_path: Path) -> None:
    path = tmp_path / "forms.json"
    argv = ["bench", "forms", "--seqs", "16,18", "--mini-batch-sizes", "4", "--ops", "ttt_linear", "--heads", "1"]
    argv += ["--head-dim", "8", "--repeats", "1", "--warmup", "0", "--threads", "1", "--clock", "cpu"]
    argv += ["--peak-sizes", "16", "--json", str(path)]
    assert main(argv) == 0
    records = json.loads(path.read_text())["records"]
    assert {r["form"] for r in records} == {"primal", "dual"}
    for r in records:
        if r["T"] == 18:  # not a multiple of b: no FLOP count, still a split
            assert r["flops"] is None
            assert r["fraction_of_peak"] is None
        else:
            assert r["flops"] > 0
            assert r["fraction_of_peak"] == pytest.approx(r["gflop_per_s"] / r["peak_gflop_per_s"])
        phases = ("forward_s", "overhead_s") if r["pass"] == "fwd" else ("forward_s", "backward_s", "overhead_s")
        _check_split(r, "seconds", phases)
        if r["pass"] == "fwd":
            assert r["backward_s"] is None
    assert len(forms.tables(records)) == 3


def test_forms_tables_read_records_that_call_the_primal_form_naive() -> None:
    def record(form: str, seconds: float) -> dict:
        return {"op": "ttt_linear", "pass": "fwd", "T": 16, "b": 4, "form": form, "seconds": seconds}

    speedup, _ = forms.tables([record("naive", 3.0), record("dual", 1.0)])
    assert speedup.rows == [["ttt_linear", "fwd", "16", "3.0x"]]
