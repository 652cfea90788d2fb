"""``tttlm bench train``: training throughput (tokens/s), efficiency and peak memory of registry models on this machine.

Each (arch, size) runs in a fresh process, so its peak resident memory is its own: a few AdamW steps
(forward + backward + update) on random token ids of ``seq_len``, timed after one warm-up step on ``clock``. FLOPs per
token are analytical: 3 × the forward's (``tttlm.bench.flops.train_flops_per_token``), so ``gflop_per_s`` is the rate
the step achieved; ``fraction_of_peak`` divides it by the matmul peak measured in the same process on the same clock
(``tttlm.bench.efficiency``: square GEMMs and the model's own tokens × hidden × MLP-width product, float32). One more
step runs under the profiler and splits the step into forward, backward and optimizer kernel time and the overhead
(Python, autograd, dispatch): ``forward_s + backward_s + optimizer_s + overhead_s = seconds_per_step``.

``--compile``: every case is measured twice, eager and with the loss call compiled (``tttlm.models.compiled``;
``compiled: true`` in its record), each in its own fresh process and from cold compile caches; ``compile_s`` is the
wall-clock seconds the first (compiling) step took beyond a timed step. An arch that cannot train compiled gets a
record with ``skipped`` saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tttlm.argtypes import choice_list, int_list
from tttlm.bench.cases import add_compile_arguments, in_fresh_process
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import Record, TextTable, fmt, print_tables, si, skipped_lines
from tttlm.bench.timing import CLOCKS

PHASES = ("forward", "backward", "optimizer")


@dataclass(frozen=True)
class TrainRecord:
    """Median training throughput over ``steps`` timed steps, its efficiency and split, and the process's peak RSS."""

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
    clock: str = "wall"
    peak_gflop_per_s: float | None = None  # the matmul peak measured in the same process (tttlm.bench.efficiency)
    peak_gemm: str | None = None  # the GEMM that gave it, "m x k x n dtype"
    fraction_of_peak: float | None = None  # gflop_per_s / peak_gflop_per_s
    forward_s: float | None = None  # kernel seconds per step in the forward (profiled step)
    backward_s: float | None = None
    optimizer_s: float | None = None
    overhead_s: float | None = None  # seconds_per_step minus the kernel seconds: Python, autograd, dispatch
    profiled_step_s: float | None = None  # the profiled step itself, profiler cost included
    # the forward and backward compiled (tttlm.models.compiled; records before --compile existed: eager)
    compiled: bool = False
    backend: str | None = None  # the torch.compile backend of a compiled record
    compile_s: float | None = None  # wall seconds of the first step beyond a timed one: tracing and code generation
    graphs: int | None = None  # graphs Dynamo compiled (1 + graph breaks + recompiles)
    graph_breaks: int | None = None
    skipped: str | None = None  # why a compiled case was not measured (the arch cannot run compiled)


def model_gemm_shapes(config: Any, tokens: int) -> list[tuple[int, int, int]]:
    """The model's own largest products as GEMMs: tokens × hidden × MLP width (or 4 × hidden) and back."""
    hidden = config.hidden_size
    width = getattr(config, "intermediate_size", None) or 4 * hidden
    return [(tokens, hidden, width), (tokens, width, hidden)]


def _measure(
    arch: str, size: str, seq_len: int, batch: int, steps: int, threads: int, clock: str = "wall",
    peak_sizes: Sequence[int] = (512, 1024, 2048), split: bool = True, backend: str | None = None,
) -> dict[str, object]:  # fmt: skip
    """Runs in a child process: build, train ``1 + steps`` steps (and one profiled step), return the record;
    ``backend``: compile the loss call with this torch.compile backend (None: eager)."""
    import time

    from tttlm.bench.efficiency import measure_peak, no_region, profile_split, square_shapes
    from tttlm.bench.flops import has_flop_formula, train_flops_per_token
    from tttlm.bench.timing import clock_function
    from tttlm.models import build, compiled

    if threads:
        torch.set_num_threads(threads)
    now = clock_function(clock)
    torch.manual_seed(0)
    model = build(arch, size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.config.vocab_size
    caches = contextlib.nullcontext() if backend is None else compiled.cold_compile_cache()
    with caches:
        counted = compiled.CompileCounters.now()
        if backend is None:
            loss_of = lambda ids, labels: model(input_ids=ids, labels=labels, use_cache=False).loss  # noqa: E731
        else:
            loss_of = compiled.compiled_loss(model, backend)

        def step(region: Any = no_region) -> None:
            ids = torch.randint(vocab, (batch, seq_len))
            with region("forward"):
                loss = loss_of(ids, ids)
            with region("backward"):
                loss.backward()
            with region("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        samples, walls = [], []
        for index in range(1 + steps):
            start, wall = now(), time.perf_counter()
            step()
            walls.append(time.perf_counter() - wall)
            if index:  # the first step pays for allocations and lazy initialisation (and the compile)
                samples.append(now() - start)
        after = compiled.CompileCounters.now()
    seconds = statistics.median(samples)
    compile_fields = {}
    if backend is not None:
        compile_fields = {
            "compiled": True, "backend": backend, "compile_s": walls[0] - statistics.median(walls[1:]),
            "graphs": after.graphs - counted.graphs, "graph_breaks": after.graph_breaks - counted.graph_breaks,
        }  # fmt: skip
    parts = profile_split(step, PHASES, seconds, clock).fields(PHASES) if split else {}
    flops = train_flops_per_token(model.config, seq_len) if has_flop_formula(model.config) else None
    rate = None if flops is None else flops * batch * seq_len / seconds / 1e9
    dtype = next(model.parameters()).dtype
    peak = measure_peak(square_shapes(peak_sizes) + model_gemm_shapes(model.config, batch * seq_len), dtype, clock)
    record = TrainRecord(
        arch, size, sum(p.numel() for p in model.parameters()), seq_len, batch, batch * seq_len / seconds, seconds,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, steps, torch.get_num_threads(), flops, rate,
        clock, **peak.fields(rate), **parts, **compile_fields,
    )  # fmt: skip
    return asdict(record)


def _not_compilable(arch: str, size: str, seq_len: int, batch: int, steps: int, threads: int, clock: str,
                    backend: str) -> dict[str, object] | None:  # fmt: skip
    """The record of a compiled case that cannot run (``compiled.check_compilable``), or None when it can."""
    from tttlm.models import compiled

    try:
        compiled.check_compilable(arch, training=True)
    except compiled.CompileUnsupportedError as error:
        return {
            "arch": arch, "size": size, "seq_len": seq_len, "batch": batch, "steps": steps,
            "threads": threads or torch.get_num_threads(), "clock": clock, "compiled": True, "backend": backend,
            "skipped": str(error),
        }  # fmt: skip
    return None


def run_train_bench(
    archs: Sequence[str] = ("ttt-linear", "ttt-mlp", "transformer"),
    sizes: Sequence[str] = ("tiny", "125m"),
    seq_len: int = 2048,
    batch: int = 1,
    steps: int = 2,
    threads: int = 0,
    fresh_process: bool = True,
    out: RecordsFile | None = None,
    clock: str = "wall",
    peak_sizes: Sequence[int] = (512, 1024, 2048),
    split: bool = True,
    compile_backend: str | None = None,
) -> list[dict[str, object]]:
    """Measure every (size, arch), each in its own forked process unless ``fresh_process`` is False (then the
    peak memory is the running process's so far); each record (a ``TrainRecord`` as a dict) goes to ``out`` as
    soon as it is measured and is returned. ``clock``: see ``tttlm.bench.timing.clock_function`` ("cpu" needs 1
    thread); ``peak_sizes``: the square GEMMs of the peak (the model's own shapes are added); ``split``: profile one
    more step for the time split; ``compile_backend``: also measure every case compiled with this torch.compile
    backend ("inductor"; None: eager only)."""
    from tttlm.bench.timing import clock_function
    from tttlm.models.compiled import check_backend

    clock_function(clock, threads=threads or torch.get_num_threads())  # refuse a clock that cannot work, up front
    if compile_backend is not None:
        check_backend(compile_backend)
    settings = (seq_len, batch, steps, threads, clock, tuple(peak_sizes), split)
    modes = [None] if compile_backend is None else [None, compile_backend]
    cases = [(arch, size, *settings, mode) for size in sizes for arch in archs for mode in modes]
    run = _measure if not fresh_process else lambda *case: in_fresh_process(_measure, *case)
    records = []
    with CaseProgress("bench train", len(cases), out) as progress:
        for case in cases:
            arch, size, mode = case[0], case[1], case[-1]
            progress.start(f"{arch} {size}{'' if mode is None else f' compiled ({mode})'}")
            record = None if mode is None else _not_compilable(arch, size, seq_len, batch, steps, threads, clock, mode)
            if record is not None:
                records.append(record)
                progress.done([record], f"skipped: {record['skipped']}")
                continue
            record = run(*case)
            records.append(record)
            share = record["fraction_of_peak"]
            efficiency = "" if share is None else f", {100 * share:.1f} % of the matmul peak"
            compile_s = "" if mode is None else f", compiled in {record['compile_s']:.1f} s"
            progress.done([record], f"{record['tokens_per_s']:,.0f} tokens/s{efficiency}{compile_s}")
    return records


def tables(records: Sequence[Record]) -> list[TextTable]:
    """One row per (arch, size): parameters, tokens/s, seconds per step, peak RSS, FLOPs/token, GFLOP/s; then the
    efficiency: % of the matmul peak and the step split into forward, backward, optimizer kernels and overhead;
    with compiled records, eager against compiled. A compiled case's arch reads "arch (compiled)"."""
    skipped = [r for r in records if r.get("skipped")]
    records = [r for r in records if not r.get("skipped")]
    headers = ["arch", "size", "params", "seq x batch", "tokens/s", "s/step", "peak RSS MB", "FLOPs/token", "GFLOP/s"]
    table = TextTable("Training throughput (forward + backward + AdamW), median step", headers, left=2)
    for r in records:
        table.rows.append([
            label(r), r["size"], f"{r['parameters'] / 1e6:.1f}M", f"{r['seq_len']} x {r['batch']}",
            f"{r['tokens_per_s']:,.0f}", f"{r['seconds_per_step']:.3g}", f"{r['peak_rss_mb']:,.0f}",
            si(r.get("flops_per_token")), fmt(r.get("gflop_per_s")),
        ])  # fmt: skip
    out = [table, *_compile_tables(records, skipped)]
    measured = [r for r in records if r.get("peak_gflop_per_s") is not None]
    if not measured:  # records written before the efficiency fields existed
        return out
    headers = ["arch", "size", "GFLOP/s", "peak GFLOP/s (GEMM)", "% of peak", "forward", "backward", "optimizer"]
    split = TextTable(
        f"Efficiency: model FLOPs/s against the matmul peak measured in the same process; seconds per step in "
        f"kernels and overhead ({measured[0].get('clock', 'wall')} clock)",
        [*headers, "overhead", "overhead %"],
        left=2,
    )
    for r in measured:
        overhead = r.get("overhead_s")
        share = r.get("fraction_of_peak")
        split.rows.append([
            label(r), r["size"], fmt(r.get("gflop_per_s")), f"{r['peak_gflop_per_s']:.3g} ({r['peak_gemm']})",
            fmt(None if share is None else 100 * share, ".1f"),
            *(fmt(r.get(f"{phase}_s"), ".3g") for phase in PHASES), fmt(overhead, ".3g"),
            fmt(None if overhead is None else 100 * overhead / r["seconds_per_step"], ".0f"),
        ])  # fmt: skip
    return [*out, split]


def label(record: Record) -> str:
    """The arch, with " (compiled)" for a compiled record (records written before --compile existed: eager)."""
    return f"{record['arch']} (compiled)" if record.get("compiled") else record["arch"]


def _compile_tables(records: Sequence[Record], skipped: Sequence[Record]) -> list[TextTable]:
    """Eager against compiled for every (arch, size, seq, batch) measured both ways, and the compiled cases that
    could not run; nothing when no record is compiled."""
    if not any(r.get("compiled") for r in [*records, *skipped]):
        return []
    headers = ["arch", "size", "seq x batch", "eager tokens/s", "compiled tokens/s", "speed-up", "compile s"]
    table = TextTable("torch.compile: eager against compiled (compile: wall seconds of the first step)",
                      [*headers, "graphs", "graph breaks"], left=3)  # fmt: skip
    eager = {(r["arch"], r["size"], r["seq_len"], r["batch"]): r for r in records if not r.get("compiled")}
    for r in records:
        base = eager.get((r["arch"], r["size"], r["seq_len"], r["batch"]))
        if not r.get("compiled"):
            continue
        table.rows.append([
            f"{r['arch']} ({r.get('backend')})", r["size"], f"{r['seq_len']} x {r['batch']}",
            "-" if base is None else f"{base['tokens_per_s']:,.0f}", f"{r['tokens_per_s']:,.0f}",
            "-" if base is None else f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x", fmt(r.get("compile_s"), ".3g"),
            fmt(r.get("graphs"), "d"), fmt(r.get("graph_breaks"), "d"),
        ])  # fmt: skip
    for r in skipped:
        # why: the command prints skipped_lines below the tables
        table.rows.append([r["arch"], r["size"], f"{r['seq_len']} x {r['batch']}", "-", "skipped", "-", "-", "-", "-"])
    return [table]


def plot(records: Sequence[Record], path: Path) -> None:
    """Bars of training tokens/s per arch, grouped by size (log scale)."""
    from tttlm.bench.plots import plot_bars

    groups: dict[str, dict[str, float]] = {}
    for r in records:
        if not r.get("skipped"):
            groups.setdefault(r["size"], {})[label(r)] = r["tokens_per_s"]
    seq = records[0]["seq_len"] if records else "?"
    plot_bars(groups, path, f"tttlm bench train: tokens/s at {seq} tokens per sequence", "tokens / s")


def _bench_train(args: argparse.Namespace) -> int:
    import sys

    try:
        with RecordsFile("train", args.json, args.argv) as out:
            run_train_bench(
                args.archs, args.sizes, args.seq_len, args.batch, args.steps, args.threads, not args.in_process, out,
                args.clock, args.peak_sizes, not args.no_split, args.compile_backend if args.compile else None,
            )  # fmt: skip
    except ValueError as error:  # a clock that cannot time this setting
        print(f"tttlm bench train: error: {error}", file=sys.stderr)
        return 2
    print_tables(tables(out.records))
    for line in skipped_lines(out.records):
        print(f"skipped {line}")
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
    train_bench.add_argument(
        "--clock",
        choices=CLOCKS,
        default="wall",
        help="wall: wall-clock time; cpu: CPU time of the timing thread, what a step costs on an idle core of a "
        "shared machine (needs --threads 1)",
    )
    train_bench.add_argument(
        "--peak-sizes", type=int_list, default=[512, 1024, 2048], help="square GEMMs of the matmul peak"
    )
    train_bench.add_argument("--no-split", action="store_true", help="skip the profiled step (no time split)")
    add_compile_arguments(train_bench)
    train_bench.set_defaults(func=_bench_train)
