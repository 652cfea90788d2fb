"""``tttlm bench prefill|decode|train`` on the tiny preset, in this process: JSON records with the machine facts and
the command, tables, PNG figures; the crossover's interpolation; clear errors for bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tttlm.bench.cases import NEEDS_CUDA
from tttlm.bench.prefill import crossover, parse_pair
from tttlm.cli import main

COMMON = ["--sizes", "tiny", "--threads", "1"]


def _payload(path: Path, benchmark: str, argv: list[str]) -> list[dict]:
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == benchmark
    assert payload["argv"] == argv
    machine = payload["machine"]
    assert {"processor", "cpu_count", "torch", "transformers", "load_average", "device"} <= machine.keys()
    return payload["records"]


def test_prefill_writes_records_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, png = tmp_path / "prefill.json", tmp_path / "prefill.png"
    argv = [
        "bench", "prefill", "--archs", "ttt-linear,transformer", *COMMON, "--contexts", "32,16",
        "--ttt-forms", "dual,triton", "--repeats", "2", "--warmup", "0", "--in-process",
        "--json", str(path), "--plot", str(png),
    ]  # fmt: skip
    assert main(argv) == 0
    records = _payload(path, "prefill", argv)
    assert [(r["arch"], r["form"], r["context"]) for r in records] == [
        ("ttt-linear", "dual", 16), ("ttt-linear", "dual", 32), ("ttt-linear", "triton", 16),
        ("ttt-linear", "triton", 32), ("transformer", None, 16), ("transformer", None, 32),
    ]  # fmt: skip
    for r in records:
        assert r["flops_per_token"] > 0
        if r["form"] == "triton":  # no GPU here: said, not measured
            assert r["skipped"] == NEEDS_CUDA
            assert r["ms_per_token"] is None
        else:
            assert r["skipped"] is None
            assert 0 < r["min_ms_per_token"] <= r["ms_per_token"] <= r["max_ms_per_token"]
            assert r["peak_memory_mb"] >= r["baseline_memory_mb"] > 0
            assert r["parameters"] > 0
    out = capsys.readouterr().out
    assert "crossover: ttt-linear" in out
    assert NEEDS_CUDA in out
    assert png.read_bytes().startswith(b"\x89PNG")


def test_prefill_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "prefill.json"
    argv = ["bench", "prefill", "--archs", "gated-deltanet", *COMMON, "--contexts", "40", "--chunk-size", "16"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--in-process", "--json", str(path)]) == 0
    (record,) = json.loads(path.read_text())["records"]
    assert record["chunk_size"] == 16
    assert record["ms_per_token"] > 0


def test_decode_writes_records_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, png = tmp_path / "decode.json", tmp_path / "decode.png"
    argv = [
        "bench", "decode", "--archs", "ttt-linear,transformer", *COMMON, "--contexts", "40,16", "--tokens", "2",
        "--warmup", "1", "--prefill-chunk", "24", "--json", str(path), "--plot", str(png),
    ]  # fmt: skip
    assert main(argv) == 0
    records = _payload(path, "decode", argv)
    assert [(r["arch"], r["context"]) for r in records] == [
        ("ttt-linear", 16), ("ttt-linear", 40), ("transformer", 16), ("transformer", 40),
    ]  # fmt: skip
    assert all(0 < r["min_ms"] <= r["ms_per_token"] <= r["max_ms"] and r["flops_per_token"] > 0 for r in records)
    ttt, attention = records[:2], records[2:]
    assert ttt[0]["cache_mb"] == ttt[1]["cache_mb"]  # a fixed-size state
    assert attention[1]["cache_mb"] == pytest.approx(attention[0]["cache_mb"] * 40 / 16)  # the KV cache grows
    assert "decode ms per token" in capsys.readouterr().out
    assert png.read_bytes().startswith(b"\x89PNG")


def test_train_records_flops_and_plot(tmp_path: Path) -> None:
    path, png = tmp_path / "train.json", tmp_path / "train.png"
    argv = ["bench", "train", "--archs", "ttt-linear,gated-deltanet", *COMMON, "--seq-len", "32", "--steps", "1"]
    argv += ["--in-process", "--peak-sizes", "16", "--json", str(path), "--plot", str(png)]
    assert main(argv) == 0
    records = _payload(path, "train", argv)
    assert [r["arch"] for r in records] == ["ttt-linear", "gated-deltanet"]
    assert all(r["flops_per_token"] > 0 and r["gflop_per_s"] > 0 for r in records)
    assert png.read_bytes().startswith(b"\x89PNG")


def _synthetic(first: dict[int, float], second: dict[int, float]) -> list[dict]:
    return [
        {"arch": arch, "form": form, "size": "125m", "context": c, "ms_per_token": ms}
        for arch, form, times in (("ttt-linear", "dual", first), ("transformer", None, second))
        for c, ms in times.items()
    ]


def test_crossover_interpolates_between_measured_contexts() -> None:
    # ttt 5 ms flat; transformer 4, 4.5, 6 ms: equal at 1024 + 1024 · (5 − 4.5) / (6 − 4.5) ≈ 1365 tokens
    records = _synthetic({512: 5, 1024: 5, 2048: 5}, {512: 4, 1024: 4.5, 2048: 6})
    found = crossover(records, "ttt-linear", "transformer", "125m")
    assert found.context == pytest.approx(1024 + 1024 / 3)
    assert not found.below_range
    assert found.ratios[2048] == pytest.approx(5 / 6)
    assert "from about 1,365 tokens" in found.describe()


def test_crossover_edge_cases() -> None:
    faster = crossover(_synthetic({512: 1, 1024: 1}, {512: 2, 1024: 3}), "ttt-linear", "transformer", "125m")
    assert faster.below_range
    assert faster.context == 512
    never = crossover(_synthetic({512: 5, 1024: 5}, {512: 2, 1024: 3}), "ttt-linear", "transformer", "125m")
    assert never.context is None
    assert "not faster" in never.describe()
    # a single noisy point where the first is faster does not count: it must stay faster from there on
    noisy = _synthetic({512: 5, 1024: 5, 2048: 5, 4096: 5}, {512: 6, 1024: 4, 2048: 4, 4096: 7})
    assert crossover(noisy, "ttt-linear", "transformer", "125m").context == pytest.approx(2048 + 2048 / 3)
    assert crossover(noisy, "ttt-linear:triton", "transformer", "125m") is None  # no such records
    assert parse_pair("ttt-linear:triton, transformer") == ("ttt-linear:triton", "transformer")
    with pytest.raises(ValueError, match="two archs"):
        parse_pair("ttt-linear")
    with pytest.raises(ValueError, match="not an arch"):
        parse_pair("ttt-linear,rnn")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "prefill", "--archs", "rnn"], "choose from"),
        (["bench", "prefill", "--contexts", "0"], "positive integers"),
        (["bench", "prefill", "--contexts", "-5"], "positive integers"),
        (["bench", "decode", "--archs", "ttt-linear,lstm"], "choose from"),
        (["bench", "decode", "--ttt-forms", "naive"], "choose from"),
        (["bench", "prefill", "--sizes", "7b"], "choose from"),
    ],
)
def test_bad_arguments_are_parser_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "prefill", "--crossover", "ttt-linear"], "two archs"),
        (["bench", "prefill", "--warmup", "-1"], "warmup must be an integer >= 0"),
        (["bench", "prefill", "--chunk-size", "0"], "chunk_size must be positive"),
        (["bench", "prefill", "--repeats", "0"], "--repeats must be >= 1"),
        (["bench", "decode", "--tokens", "0"], "--tokens must be >= 1"),
        (["bench", "decode", "--warmup", "-2"], "warmup must be an integer >= 0"),
    ],
)
def test_bad_values_are_reported(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--in-process"] if argv[1] == "prefill" else argv) == 2
    assert message in capsys.readouterr().err


def test_conv_state_does_not_keep_the_call_alive() -> None:
    # found with bench decode's cache sizes: the carried conv state was a view of the whole call's input stream
    from tttlm.bench.cases import tensor_mb
    from tttlm.layers.conv import causal_depthwise_conv

    x, weight = torch.randn(1, 4096, 64), torch.randn(64, 4)
    _, state = causal_depthwise_conv(x, weight, None, None)
    assert state.shape == (1, 3, 64)
    assert tensor_mb(state) == 3 * 64 * 4 / 2**20
