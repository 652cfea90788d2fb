"""``tttlm bench memory``: peak memory of one TTT-E2E meta-training step, measured and estimated, per remat mode.

For every (size, sequence length, remat mode, trainable set) a ``ttt-e2e`` model is built from the release's size
preset (``E2E_PRESETS``, with the given window, mini-batch and vocabulary) and one training step is measured: the
forward with the loss and the backward (gradients set to None before, so they are counted), float32 on the CPU and
bf16 autocast on CUDA (as ``tttlm train`` runs there). Its peak above the weights is measured by
``live_memory.peak_bytes`` (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the peak of live tensor storage) and
set beside the analytic estimate of ``memory_estimate.estimate_step_memory``; AdamW's states (8 bytes per trainable
parameter) come on top in training and are in the estimate's total. Then, without running anything, the estimate
for models of 0.5B–4B (the shapes ``tttlm e2e-init`` makes of public checkpoints) at the paper's 32K context on one
GPU: the memory a user's own checkpoint needs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tttlm.bench.cases import check_positive, resolve_device
from tttlm.bench.live_memory import peak_bytes
from tttlm.bench.memory_estimate import TRAINABLES, MemoryEstimate, estimate_step_memory
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import Record, TextTable, print_tables
from tttlm.models.e2e.configuration import E2E_PRESETS, REMAT_MODES, E2EConfig

GIB = 2**30
MIB = 2**20
# the shapes tttlm e2e-init makes of these public checkpoints (their config.json: hidden, MLP width, blocks, query
# and key/value heads, head width, vocabulary), with the release's window, mini-batch and updated quarter
GPU_SHAPES: dict[str, dict[str, int]] = {
    "Qwen2.5-0.5B": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 151936},
    "Llama-3.2-1B": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256},
    "Qwen3-1.7B": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                   "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936},
    "Llama-3.2-3B": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
                     "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256},
    "Qwen3-4B": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936},
}  # fmt: skip
GPU_SEQ, GPU_WINDOW, GPU_MINI_BATCH = 32768, 8192, 1024
ESTIMATED = "gpu (estimate)"  # the device of an estimate-only record
OUT_OF_MEMORY = "out of memory"


@dataclass(frozen=True)
class MemoryRecord:
    """One case: the measured peak of a training step (None for an estimate-only case) and the estimate's terms.

    ``measured_bytes``: peak above the weights during forward + backward (gradients included; None when not run:
    ``skipped`` says why, e.g. out of memory); ``seconds``: one more step, untracked; ``estimate_bytes``:
    the estimate of the same (``MemoryEstimate.step_peak``); ``total_bytes``: the estimate of a whole training step
    (weights, gradients, AdamW, activations); ``activation_bytes``: bytes per saved activation in the estimate.
    """

    model: str
    device: str
    batch: int
    seq: int
    window: int
    mini_batch: int
    remat: str
    trainable: str
    parameters: int
    trainable_parameters: int
    measured_bytes: int | None
    estimate_bytes: float
    total_bytes: float
    activation_bytes: int
    seconds: float | None
    skipped: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _config(size: str, window: int, mini_batch: int, vocab: int | None, remat: str) -> E2EConfig:
    overrides: dict[str, Any] = {"sliding_window": window, "mini_batch_size": mini_batch, "remat": remat}
    if vocab is not None:
        overrides["vocab_size"] = vocab
    return E2EConfig.from_preset(size, **overrides)


def _record(
    model: str,
    device: str,
    config: E2EConfig,
    batch: int,
    seq: int,
    trainable: str,
    estimate: MemoryEstimate,
    measured: int | None,
    seconds: float | None,
    skipped: str | None = None,
) -> MemoryRecord:
    return MemoryRecord(
        model=model,
        device=device,
        batch=batch,
        seq=seq,
        window=config.sliding_window,
        mini_batch=config.mini_batch_size,
        remat=config.remat,
        trainable=trainable,
        parameters=estimate.parameters,
        trainable_parameters=estimate.trainable,
        measured_bytes=measured,
        estimate_bytes=estimate.step_peak,
        total_bytes=estimate.total,
        activation_bytes=estimate.activation_bytes,
        seconds=seconds,
        skipped=skipped,
    )


def measure_case(
    config: E2EConfig, batch: int, seq: int, trainable: str, device: torch.device, seed: int = 0
) -> tuple[int, float]:
    """(peak bytes of one training step above the weights, the seconds of another step) for ``config`` (its
    ``remat`` as it says)."""
    from tttlm.models.e2e.modeling import E2EForCausalLM

    torch.manual_seed(seed)
    model = E2EForCausalLM(config).to(device).train()
    if trainable == "updated":
        updated = {id(p) for block in model.model.updated_blocks for p in block.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in updated)
    ids = torch.randint(config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed)).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()

    peak = peak_bytes(step, device)  # also the warm-up of the timed step
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()  # timed without the CPU's tracking, which slows every operation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return peak, time.perf_counter() - started


def run_memory_bench(
    sizes: Sequence[str] = ("tiny",),
    seqs: Sequence[int] = (256, 1024),
    batch: int = 1,
    window: int = 64,
    mini_batch: int = 16,
    vocab: int | None = None,
    remats: Sequence[str] = REMAT_MODES,
    trainables: Sequence[str] = ("all",),
    device: str | None = None,
    gpu_shapes: Sequence[str] = tuple(GPU_SHAPES),
    gpu_seq: int = GPU_SEQ,
    out: RecordsFile | None = None,
) -> list[MemoryRecord]:
    """Measured and estimated peaks of every (size, seq, remat, trainable), then the estimates of ``gpu_shapes``
    at ``gpu_seq`` tokens (window 8K, b = 1K, batch 1, every remat and trainable set; activations counted in bf16).

    Args:
        sizes: ``E2E_PRESETS`` sizes to measure (none: estimates only).
        seqs, batch, window, mini_batch, vocab: the measured inputs and model (vocab None: the preset's).
        remats, trainables: ``E2EConfig.remat`` modes and "all" / "updated" (only the updated blocks train).
        device: "cpu" or "cuda" (None: CUDA when available).
        gpu_shapes, gpu_seq: the ``GPU_SHAPES`` to estimate and their sequence length.
        out: where each case's record goes when done.
    """
    unknown = [s for s in sizes if s not in E2E_PRESETS]
    if unknown:
        raise ValueError(f"unknown TTT-E2E sizes {unknown}; choose among {', '.join(E2E_PRESETS)}")
    if sizes:
        check_positive("seqs", list(seqs))
    check_positive("batch, window, mini_batch, gpu_seq", [batch, window, mini_batch, gpu_seq])
    for name, values, allowed in (("remats", remats, REMAT_MODES), ("trainables", trainables, TRAINABLES)):
        if not values or any(v not in allowed for v in values):
            raise ValueError(f"{name} must be among {', '.join(allowed)}; got {list(values)!r}")
    missing = [s for s in gpu_shapes if s not in GPU_SHAPES]
    if missing:
        raise ValueError(f"unknown GPU shapes {missing}; choose among {', '.join(GPU_SHAPES)}")
    dev = resolve_device(device)
    activation_bytes = 2 if dev.type == "cuda" else 4
    cases = [(s, t, r, tr) for s in sizes for t in seqs for tr in trainables for r in remats]
    records: list[MemoryRecord] = []
    with CaseProgress("bench memory", len(cases), out) as progress:
        for size, seq, remat, trainable in cases:
            progress.start(f"{size} T={seq} remat={remat} trainable={trainable}")
            config = _config(size, window, mini_batch, vocab, remat)
            estimate = estimate_step_memory(config, batch, seq, trainable, activation_bytes, dev.type)
            try:
                measured, seconds = measure_case(config, batch, seq, trainable, dev)
            except torch.OutOfMemoryError:
                record = _record(size, dev.type, config, batch, seq, trainable, estimate, None, None, OUT_OF_MEMORY)
                torch.cuda.empty_cache()
            else:
                record = _record(size, dev.type, config, batch, seq, trainable, estimate, measured, seconds)
            records.append(record)
            found = OUT_OF_MEMORY if record.skipped else f"{measured / MIB:.1f} MiB"
            progress.done([record.to_json()], f"{found} (estimate {estimate.step_peak / MIB:.1f} MiB)")
    estimates = []
    for name in gpu_shapes:
        for trainable in TRAINABLES:
            for remat in REMAT_MODES:
                config = E2EConfig(
                    **GPU_SHAPES[name], sliding_window=GPU_WINDOW, mini_batch_size=GPU_MINI_BATCH, remat=remat
                )
                estimate = estimate_step_memory(config, 1, gpu_seq, trainable, activation_bytes=2)
                estimates.append(_record(name, ESTIMATED, config, 1, gpu_seq, trainable, estimate, None, None))
    if out is not None and estimates:
        out.add(r.to_json() for r in estimates)
    return records + estimates


def tables(records: Sequence[Record]) -> list[TextTable]:
    """The measured cases (measured vs estimated peak, seconds) and the GPU estimates (total GiB per mode)."""
    measured = TextTable(
        "One meta-training step (forward + backward): peak above the weights, measured vs estimated; s/step of "
        "another step, untracked",
        ["model", "device", "trainable", "T", "remat", "params", "measured MiB", "estimate MiB", "est/meas", "s/step"],
        left=5,
    )
    for r in (r for r in records if r["device"] != ESTIMATED):
        found = r["measured_bytes"]
        cells = [OUT_OF_MEMORY, "-", "-"] if found is None else [
            f"{found / MIB:,.1f}", f"{r['estimate_bytes'] / found:.2f}", f"{r['seconds']:.2f}"
        ]  # fmt: skip
        measured.rows.append(
            [r["model"], r["device"], r["trainable"], str(r["seq"]), r["remat"], f"{r['parameters'] / 1e6:.2f}M",
             cells[0], f"{r['estimate_bytes'] / MIB:,.1f}", *cells[1:]]
        )  # fmt: skip
    estimated = [r for r in records if r["device"] == ESTIMATED]
    out = [measured] if measured.rows else []
    if estimated:
        gpu = TextTable(
            f"ESTIMATE (not measured): GiB for one training step at {estimated[0]['seq']:,} tokens, batch 1, window "
            f"{estimated[0]['window']:,}, b = {estimated[0]['mini_batch']:,}: weights + gradients + AdamW "
            "(float32) + activations (bf16 autocast)",
            ["model", "params", "trainable", *(f"remat={m}" for m in REMAT_MODES)],
            left=3,
        )
        for name in dict.fromkeys(r["model"] for r in estimated):
            for trainable in TRAINABLES:
                row = {r["remat"]: r for r in estimated if r["model"] == name and r["trainable"] == trainable}
                first = next(iter(row.values()))
                gpu.rows.append(
                    [
                        name,
                        f"{first['parameters'] / 1e9:.2f}B",
                        f"{trainable} ({first['trainable_parameters'] / 1e9:.2f}B)",
                    ]
                    + [f"{row[m]['total_bytes'] / GIB:,.0f}" for m in REMAT_MODES]
                )
        out.append(gpu)
    return out


def _bench_memory(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with RecordsFile("memory", args.json, args.argv) as out:
            records = run_memory_bench(
                sizes=args.sizes,
                seqs=args.seqs,
                batch=args.batch,
                window=args.window,
                mini_batch=args.mini_batch,
                vocab=args.vocab,
                remats=args.remats,
                trainables=args.trainables,
                device=args.device,
                gpu_shapes=args.gpu_shapes,
                gpu_seq=args.gpu_seq,
                out=out,
            )
    except ValueError as error:
        print(f"tttlm bench memory: error: {error}", file=sys.stderr)
        return 2
    print_tables(tables([r.to_json() for r in records]))
    out.finish()
    return 0


def add_bench_memory_command(benches: Any) -> None:
    """Register ``tttlm bench memory`` on the ``bench`` sub-parsers."""
    from tttlm.argtypes import choice_list, int_list

    parser = benches.add_parser(
        "memory",
        help="peak memory of a ttt-e2e meta-training step with and without remat; GPU estimates at 32K",
        description="Measure the peak memory of one TTT-E2E training step (forward + backward) in each remat mode "
        "(CUDA: max_memory_allocated; CPU: peak live tensor storage) beside the analytic estimate, then print the "
        "estimate for 0.5B-4B models at 32K tokens on one GPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/memory.json"), help="records file")
    parser.add_argument(
        "--sizes", type=choice_list(tuple(E2E_PRESETS)), default=["tiny"], help="TTT-E2E presets to measure"
    )
    parser.add_argument("--seqs", type=int_list, default=[256, 1024], help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step")
    parser.add_argument("--window", type=int, default=64, help="sliding window k")
    parser.add_argument("--mini-batch", type=int, default=16, help="inner mini-batch b")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the preset's)")
    parser.add_argument("--remats", type=choice_list(REMAT_MODES), default=list(REMAT_MODES), help="E2EConfig.remat")
    parser.add_argument(
        "--trainables", type=choice_list(TRAINABLES), default=["all"], help="all parameters, or the updated blocks"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument(
        "--gpu-shapes", type=choice_list(tuple(GPU_SHAPES)), default=list(GPU_SHAPES), help="models to estimate"
    )
    parser.add_argument("--gpu-seq", type=int, default=GPU_SEQ, help="tokens per sequence of the GPU estimate")
    parser.set_defaults(func=_bench_memory)
