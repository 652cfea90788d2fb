"""``tttlm bench memory``: the live-tensor peak it measures on the CPU counts what it should, the analytic estimate
of a TTT-E2E training step is within its stated tolerance of the measured peak at small sizes (other than those
its coefficients were counted at), and the command writes its records and tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tttlm.bench.live_memory import TensorMemory, peak_bytes
from tttlm.bench.memory import ESTIMATED, GPU_SHAPES, measure_case, run_memory_bench, tables
from tttlm.bench.memory_estimate import TOLERANCE, estimate_step_memory
from tttlm.cli import main
from tttlm.models.e2e.configuration import REMAT_MODES, E2EConfig

CPU = torch.device("cpu")


def test_tensor_memory_counts_each_storage_once_until_it_is_freed() -> None:
    with TensorMemory() as memory:
        a = torch.empty(1000)  # 4,000 bytes
        view = a.view(10, 100)  # the same storage: not counted again
        b = torch.zeros(500)  # 2,000
        del a, view  # freed: 4,000 no longer live
        c = torch.ones(100)  # 400
    assert memory.peak == 6000
    assert memory.live == 2400
    del b, c


def test_peak_bytes_sees_the_backward() -> None:
    x = torch.randn(1000, requires_grad=True)
    # exp's output (saved), the product, the gradient buffers: well above the forward's 8,000 bytes
    assert peak_bytes(lambda: (x.exp() * 2).sum().backward(), CPU) >= 12000


# the tiny preset at another window, b and length, and a wider 4-block model with 2 updated blocks, batch 2
SHAPES = {
    "tiny": (E2EConfig.from_preset("tiny", sliding_window=48, mini_batch_size=12), 1, 480),
    "wide": (
        E2EConfig(
            vocab_size=1024, hidden_size=96, intermediate_size=208, num_hidden_layers=4, num_attention_heads=8,
            updated_fraction=0.5, sliding_window=40, mini_batch_size=20,
        ),
        2, 320,
    ),
}  # fmt: skip


@pytest.mark.parametrize("trainable", ["all", "updated"])
@pytest.mark.parametrize("remat", REMAT_MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_estimate_is_within_its_tolerance_of_the_measured_peak(shape: str, remat: str, trainable: str) -> None:
    config, batch, seq = SHAPES[shape]
    config = E2EConfig(**{**config.to_dict(), "remat": remat})
    measured, _ = measure_case(config, batch, seq, trainable, CPU)
    estimate = estimate_step_memory(config, batch, seq, trainable, activation_bytes=4, device_type="cpu")
    assert abs(estimate.step_peak / measured - 1) <= TOLERANCE, (estimate.step_peak, measured)


def test_the_gpu_estimates_fall_with_remat_and_with_fewer_trainable_parameters() -> None:
    config = E2EConfig(**GPU_SHAPES["Llama-3.2-1B"], sliding_window=8192, mini_batch_size=1024)
    total = {
        (remat, trainable): estimate_step_memory(
            E2EConfig(**{**config.to_dict(), "remat": remat}), 1, 32768, trainable, activation_bytes=2
        ).total
        for remat in REMAT_MODES
        for trainable in ("all", "updated")
    }
    for trainable in ("all", "updated"):
        assert total["all", trainable] <= total["inner", trainable] < total["none", trainable]
    assert total["all", "updated"] < total["all", "all"]
    # weights, gradients and AdamW alone: 16 bytes per parameter of 1.44B (Llama-3.2-1B with 4 prime MLPs)
    assert 16 * 1.4e9 < total["all", "all"] < 200 * 2**30


def test_bench_memory_writes_records_and_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "memory.json"
    argv = ["bench", "memory", "--sizes", "tiny", "--seqs", "32", "--window", "8", "--mini-batch", "4",
            "--gpu-shapes", "Qwen2.5-0.5B", "--threads", "1", "--json", str(path)]  # fmt: skip
    assert main(argv) == 0
    records = json.loads(path.read_text())["records"]
    measured = [r for r in records if r["device"] != ESTIMATED]
    assert [r["remat"] for r in measured] == list(REMAT_MODES)
    assert all(r["device"] == "cpu" and r["measured_bytes"] > 0 and r["seconds"] > 0 for r in measured)
    estimated = [r for r in records if r["device"] == ESTIMATED]
    assert {(r["model"], r["seq"]) for r in estimated} == {("Qwen2.5-0.5B", 32768)}
    assert len(estimated) == 2 * len(REMAT_MODES)  # every remat mode, all or only the updated blocks trained
    titles = [t.title for t in tables(records)]
    assert titles[0].startswith("One meta-training step")
    assert titles[1].startswith("ESTIMATE (not measured)")
    assert "ESTIMATE (not measured)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"sizes": ["huge"]}, "unknown TTT-E2E sizes"), ({"remats": ["auto"]}, "remats must be among"),
     ({"gpu_shapes": ["GPT-5"]}, "unknown GPU shapes"), ({"seqs": [0]}, "seqs must be positive")],
)  # fmt: skip
def test_bad_arguments_are_refused_clearly(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        run_memory_bench(**kwargs)
