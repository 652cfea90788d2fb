"""``tttlm bench train``: training throughput (tokens/s) and peak memory of registry models on this machine.

Each (arch, size) runs in a fresh process, so its peak resident memory is its own: a few AdamW steps
(forward + backward + update) on random token ids of ``seq_len``, timed after one warm-up step. FLOPs per token are
analytical: 3 × the forward's (``tttlm.bench.flops.train_flops_per_token``), so ``gflop_per_s`` is the rate the
step achieved.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tttlm.argtypes import choice_list
from tttlm.bench.cases import in_fresh_process
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import Record, TextTable, fmt, print_tables, si


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
    flops_per_token: float | None
    gflop_per_s: float | None


def _measure(arch: str, size: str, seq_len: int, batch: int, steps: int, threads: int) -> dict[str, object]:
    """Runs in a child process: build, train ``1 + steps`` steps, return the record as a dict."""
    from tttlm.bench.flops import has_flop_formula, train_flops_per_token
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
    flops = train_flops_per_token(model.config, seq_len) if has_flop_formula(model.config) else None
    record = TrainRecord(
        arch, size, sum(p.numel() for p in model.parameters()), seq_len, batch, batch * seq_len / seconds, seconds,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, steps, torch.get_num_threads(), flops,
        None if flops is None else flops * batch * seq_len / seconds / 1e9,
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
    out: RecordsFile | None = None,
) -> list[TrainRecord]:
    """Measure every (size, arch), each in its own forked process unless ``fresh_process`` is False (then the
    peak memory is the running process's so far); each record goes to ``out`` as soon as it is measured."""
    cases = [(arch, size, seq_len, batch, steps, threads) for size in sizes for arch in archs]
    run = _measure if not fresh_process else lambda *case: in_fresh_process(_measure, *case)
    records = []
    with CaseProgress("bench train", len(cases), out) as progress:
        for case in cases:
            progress.start(f"{case[0]} {case[1]}")
            record = run(*case)
            records.append(TrainRecord(**record))
            progress.done([record], f"{record['tokens_per_s']:,.0f} tokens/s")
    return records


def tables(records: Sequence[Record]) -> list[TextTable]:
    """One row per (arch, size): parameters, tokens/s, seconds per step, peak RSS, FLOPs/token, GFLOP/s."""
    headers = ["arch", "size", "params", "seq x batch", "tokens/s", "s/step", "peak RSS MB", "FLOPs/token", "GFLOP/s"]
    table = TextTable("Training throughput (forward + backward + AdamW), median step", headers, left=2)
    for r in records:
        table.rows.append([
            r["arch"], r["size"], f"{r['parameters'] / 1e6:.1f}M", f"{r['seq_len']} x {r['batch']}",
            f"{r['tokens_per_s']:,.0f}", f"{r['seconds_per_step']:.3g}", f"{r['peak_rss_mb']:,.0f}",
            si(r.get("flops_per_token")), fmt(r.get("gflop_per_s")),
        ])  # fmt: skip
    return [table]


def plot(records: Sequence[Record], path: Path) -> None:
    """Bars of training tokens/s per arch, grouped by size (log scale)."""
    from tttlm.bench.plots import plot_bars

    groups: dict[str, dict[str, float]] = {}
    for r in records:
        groups.setdefault(r["size"], {})[r["arch"]] = r["tokens_per_s"]
    seq = records[0]["seq_len"] if records else "?"
    plot_bars(groups, path, f"tttlm bench train: tokens/s at {seq} tokens per sequence", "tokens / s")


def _bench_train(args: argparse.Namespace) -> int:
    with RecordsFile("train", args.json, args.argv) as out:
        run_train_bench(
            args.archs, args.sizes, args.seq_len, args.batch, args.steps, args.threads, not args.in_process, out
        )
    print_tables(tables(out.records))
    out.finish(plot, args.plot)
    return 0


def add_bench_train_command(benches: Any) -> None:
    """Register ``tttlm bench train`` on the ``bench`` sub-parsers."""
    from tttlm.models import ARCHS
    from tttlm.models.ttt.configuration import PRESETS

    train_bench = benches.add_parser(
        "train",
        help="training tokens/s and peak memory of registry models",
        description="Time forward+backward+AdamW steps on random tokens, each model in a fresh process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train_bench.add_argument("--json", type=Path, default=Path("bench-results/train.json"), help="records file")
    train_bench.add_argument("--plot", type=Path, default=None, help="PNG: tokens/s per arch and size")
    train_bench.add_argument(
        "--archs", type=choice_list(ARCHS), default=["ttt-linear", "ttt-mlp", "transformer"], help="models"
    )
    train_bench.add_argument("--sizes", type=choice_list(tuple(PRESETS)), default=["tiny", "125m"], help="presets")
    train_bench.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    train_bench.add_argument("--batch", type=int, default=1, help="sequences per step")
    train_bench.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    train_bench.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    train_bench.add_argument(
        "--in-process", action="store_true", help="measure in this process (faster start; peak memory is cumulative)"
    )
    train_bench.set_defaults(func=_bench_train)
