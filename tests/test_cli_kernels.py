"""``tttlm bench kernels`` at tiny sizes on the CPU: every row runs or is skipped with its reason; JSON + PNG."""

from __future__ import annotations

import json

import pytest
import torch

from tttlm.bench.kernels import NEEDS_GPU
from tttlm.cli import main

TINY = [
    "bench", "kernels", "--sizes", "tiny", "--contexts", "32,48", "--batches", "1,2", "--decode-context", "16",
    "--tokens", "2", "--repeats", "1", "--warmup", "0", "--device", "cpu", "--threads", "1",
]  # fmt: skip


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "kernels", "--help"])
    assert exit_info.value.code == 0
    assert "prefill" in capsys.readouterr().out


def test_bench_kernels_on_cpu(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        assert main([*TINY, "--json", str(tmp_path / "k.json"), "--png", str(tmp_path / "k.png")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert NEEDS_GPU in out  # said up front, not only in the records
    payload = json.loads((tmp_path / "k.json").read_text())
    assert payload["benchmark"] == "kernels"
    records = payload["records"]
    # per layer/form: 2 prefill + 2 train + 2 decode rows; ttt layers in two forms, attention and mamba in one
    assert len(records) == 6 * 6
    by_form = {(r["layer"], r["form"]) for r in records}
    assert by_form == {
        ("ttt-linear", "triton"),
        ("ttt-linear", "dual"),
        ("ttt-mlp", "triton"),
        ("ttt-mlp", "dual"),
        ("attention", "sdpa"),
        ("mamba", "torch-scan"),
    }
    for r in records:
        if r["form"] == "triton":
            assert r["seconds"] is None
            assert NEEDS_GPU in r["skipped"]
        elif r["layer"] == "mamba" and r["mode"] == "train":
            assert "mamba-ssm" in r["skipped"]
        else:
            assert r["skipped"] is None, r
            assert r["seconds"] > 0
            assert r["tokens_per_second"] > 0
    decode = [r for r in records if r["mode"] == "decode" and r["seconds"] is not None]
    assert {r["batch"] for r in decode} == {1, 2}
    assert (tmp_path / "k.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--tokens", "0"], "--tokens must be >= 1"), (["--prefill-batch", "0"], "--prefill-batch must be >= 1")],
)
def test_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, *argv]) == 2
    assert message in capsys.readouterr().err
