"""``tttlm bench train``: training throughput (tokens/s) and peak memory of registry models on this machine.

Each (arch, size) runs in a fresh process, so its peak resident memory is its own: a few AdamW steps
(forward + backward + update) on random token ids of ``seq_len``, timed after one warm-up step.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class TrainRecord:
    """Median training throughput over ``steps`` timed steps and the process's peak RSS."""

    arch: str
    size: str
    parameters: int
    seq_len: int
    batch: int
    tokens_per_s: float
    seconds_per_step: float
    peak_rss_mb: float
    steps: int
    threads: int


def _measure(arch: str, size: str, seq_len: int, batch: int, steps: int, threads: int) -> dict[str, object]:
    """Runs in a child process: build, train ``1 + steps`` steps, return the record as a dict."""
    from tttlm.models import build

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(arch, size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.config.vocab_size
    samples = []
    for step in range(1 + steps):
        ids = torch.randint(vocab, (batch, seq_len))
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first step pays for allocations and lazy initialisation
            samples.append(time.perf_counter() - start)
    seconds = statistics.median(samples)
    record = TrainRecord(
        arch, size, sum(p.numel() for p in model.parameters()), seq_len, batch, batch * seq_len / seconds, seconds,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, steps, torch.get_num_threads(),
    )  # fmt: skip
    return asdict(record)


def run_train_bench(
    archs: Sequence[str] = ("ttt-linear", "ttt-mlp", "transformer"),
    sizes: Sequence[str] = ("tiny", "125m"),
    seq_len: int = 2048,
    batch: int = 1,
    steps: int = 2,
    threads: int = 0,
    fresh_process: bool = True,
) -> list[TrainRecord]:
    """Measure every (size, arch), each in its own spawned process unless ``fresh_process`` is False (then the
    peak memory is the running process's so far)."""
    cases = [(arch, size, seq_len, batch, steps, threads) for size in sizes for arch in archs]
    if not fresh_process:
        return [TrainRecord(**_measure(*case)) for case in cases]
    records = []
    for case in cases:
        # a new one-process pool per case (a pool with maxtasksperchild=1 deadlocked on its replacement worker)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            records.append(TrainRecord(**pool.apply(_measure, case)))
    return records


def print_table(records: Sequence[TrainRecord], console: Console | None = None) -> None:
    table = Table(title="Training throughput (forward + backward + AdamW), median step")
    for col in ("arch", "size", "params", "seq x batch", "tokens/s", "s/step", "peak RSS MB"):
        table.add_column(col, justify="left" if col in ("arch", "size") else "right")
    for r in records:
        table.add_row(
            r.arch, r.size, f"{r.parameters / 1e6:.1f}M", f"{r.seq_len} x {r.batch}", f"{r.tokens_per_s:,.0f}",
            f"{r.seconds_per_step:.3f}", f"{r.peak_rss_mb:,.0f}",
        )  # fmt: skip
    (console or Console()).print(table)
