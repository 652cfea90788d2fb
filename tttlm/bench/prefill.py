"""``tttlm bench prefill``: forward time per token of a whole-model prefill against context length.

The first TTT paper's latency figure: a Transformer's forward time per token grows linearly with the context
(attention reads every earlier token), TTT's and Mamba's stays flat (a fixed-size state). For each registry arch
(and TTT op form) at a size preset and each context T, one case: build the model, then time
``prefill(model, ids, chunk)`` on T random token ids — one forward call (or calls of ``--chunk-size`` tokens carrying
the cache), without autograd, keeping only the last position's logits so that the LM head does not dominate — as
the median of ``repeats`` calls after ``warmup``. Each case runs in a fresh process so that its peak memory is its
own (``tttlm.bench.cases``). FLOPs per token are analytical (``tttlm.bench.flops``).

``crossover`` finds the context from which one arch is faster than another (default TTT-Linear vs the SDPA
Transformer; the paper reports 8K on an A100), from the eager records.

``--compile``: every case is measured twice, eager and compiled (``tttlm.models.compiled.compile_module``, cold
compile caches; ``compiled: true`` in its record, "arch (compiled)" in the tables); ``compile_s`` is the wall-clock
seconds of the first, compiling, prefill call beyond a timed one (every chunk shape and the cache's first and later
calls compile then).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tttlm.bench.cases import (
    BENCH_TTT_FORMS,
    DEFAULT_ARCHS,
    Case,
    add_compile_arguments,
    build_case,
    check_positive,
    expand_cases,
    in_fresh_process,
    memory_kind,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    skip_reason,
)
from tttlm.bench.flops import has_flop_formula, prefill_flops_per_token
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import (
    Record,
    TextTable,
    context_label,
    fmt,
    pivot,
    print_tables,
    si,
    skipped_lines,
    spread,
    wide_console,
)
from tttlm.bench.timing import CLOCKS, clock_function, load_1m, time_call
from tttlm.models.registry import ARCHS, make_config

DEFAULT_CONTEXTS = (512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class PrefillRecord:
    """One (arch, form, size, context) case. Times are per token (call time / context); None when skipped.

    ``chunk_size`` is None for one call over the whole context; memory figures are MiB (``memory`` says which
    kind, see ``tttlm.bench.cases``); ``load_1m`` is the machine's 1-minute load average after the case.
    """

    arch: str
    form: str | None
    size: str
    context: int
    chunk_size: int | None
    ms_per_token: float | None
    min_ms_per_token: float | None
    max_ms_per_token: float | None
    seconds: float | None
    repeats: int
    warmup: int
    flops_per_token: float | None
    gflop_per_s: float | None
    peak_memory_mb: float | None
    baseline_memory_mb: float | None
    memory: str
    parameters: int | None
    device: str
    threads: int
    clock: str
    load_1m: float | None
    skipped: str | None = None
    # torch.compile (records before --compile existed: eager): the backend, the compiling call's extra wall seconds
    # and the graphs Dynamo compiled
    compiled: bool = False
    backend: str | None = None
    compile_s: float | None = None
    graphs: int | None = None


@dataclass(frozen=True)
class PrefillSetting:
    """How every case of a run is measured."""

    chunk_size: int | None = None
    repeats: int = 3
    warmup: int = 1
    threads: int = 0
    device: str | None = None  # None: CUDA when available
    clock: str = "wall"  # or "cpu": CPU time of the (single) timing thread, see timing.clock_function
    seed: int = 0
    # every case measured eager and compiled with this torch.compile backend (None: eager only)
    compile_backend: str | None = None


def _flops_per_token(case: Case, context: int, chunk_size: int | None) -> float | None:
    config = make_config(case.arch, case.size, **({} if case.form is None else {"ttt_form": case.form}))
    return prefill_flops_per_token(config, context, chunk_size) if has_flop_formula(config) else None


def _record(
    case: Case, context: int, setting: PrefillSetting, chunk: int | None = None, **measured: Any
) -> PrefillRecord:
    """A record of ``case`` with the ``measured`` fields (all None when skipped)."""
    flops = _flops_per_token(case, context, chunk)
    seconds = measured.get("seconds")
    achieved = None if seconds is None or flops is None else flops * context / seconds / 1e9
    fields = {
        "ms_per_token": None, "min_ms_per_token": None, "max_ms_per_token": None, "seconds": None,
        "peak_memory_mb": None, "baseline_memory_mb": None, "parameters": None, "skipped": None, **measured,
    }  # fmt: skip
    return PrefillRecord(
        case.arch, case.form, case.size, context, chunk, repeats=setting.repeats, warmup=setting.warmup,
        flops_per_token=flops, gflop_per_s=achieved,
        memory=memory_kind(torch.device(setting.device)), device=setting.device,
        threads=setting.threads or torch.get_num_threads(), clock=setting.clock, load_1m=load_1m(), **fields,
    )  # fmt: skip


def measure_case(case: Case, context: int, setting: PrefillSetting, backend: str | None = None) -> PrefillRecord:
    """Build the case's model and time its prefill of ``context`` random tokens (in this process); ``backend``:
    compile the model with this torch.compile backend first (None: eager)."""
    from tttlm.models import compiled
    from tttlm.models.streaming import prefill, supports_chunked_prefill

    if setting.threads:
        torch.set_num_threads(setting.threads)
    device = torch.device(setting.device)
    mode = {} if backend is None else {"compiled": True, "backend": backend}
    try:
        model = build_case(case, device, setting.seed)
        ids = torch.randint(model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
        ids = ids.to(device)
        # a model whose cache cannot continue a multi-token call gets the input in one call (as streaming.prefill
        # would give it); the record says so with chunk_size None
        chunk = setting.chunk_size if setting.chunk_size and supports_chunked_prefill(model) else None
        reset_peak_memory(device)
        baseline = peak_memory_mb(device)

        def call() -> None:
            prefill(model, ids, chunk or context, token_loss=False)

        with contextlib.nullcontext() if backend is None else compiled.cold_compile_cache():
            counted = compiled.CompileCounters.now()
            if backend is not None:
                compiled.compile_module(model, backend)
                with torch.no_grad():  # the compiling call, before the untimed warm-up ones
                    mode["compile_s"] = compiled.timed(call)
            timing = time_call(call, setting.repeats, setting.warmup, device, setting.clock)
            if backend is not None:
                mode["compile_s"] -= timing.median
                mode["graphs"] = compiled.CompileCounters.now().graphs - counted.graphs
        peak = peak_memory_mb(device)
    except (RuntimeError, ValueError) as error:  # out of memory, unsupported shapes, a failed compile, ...
        reason = f"{type(error).__name__}: {error}"[:300]
        return _record(case, context, setting, setting.chunk_size, skipped=reason, **mode)
    return _record(
        case, context, setting, chunk, seconds=timing.median, ms_per_token=1e3 * timing.median / context,
        min_ms_per_token=1e3 * timing.minimum / context, max_ms_per_token=1e3 * timing.maximum / context,
        peak_memory_mb=peak, baseline_memory_mb=baseline, parameters=sum(p.numel() for p in model.parameters()),
        **mode,
    )  # fmt: skip


def run_prefill_bench(
    archs: Sequence[str] = DEFAULT_ARCHS,
    sizes: Sequence[str] = ("tiny",),
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    ttt_forms: Sequence[str] = ("dual",),
    setting: PrefillSetting = PrefillSetting(),
    fresh_process: bool = True,
    out: RecordsFile | None = None,
) -> list[PrefillRecord]:
    """Measure every (size, arch, form, context) case, each in a fresh process (``cases.in_fresh_process``) unless
    ``fresh_process`` is False (then CPU peak memory is the running process's high-water mark so far); each
    record goes to ``out`` as soon as its case has finished."""
    check_positive("contexts", contexts)
    if setting.chunk_size is not None:
        check_positive("chunk_size", [setting.chunk_size])
    check_positive("repeats", [setting.repeats])
    if isinstance(setting.warmup, bool) or not isinstance(setting.warmup, int) or setting.warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0; got {setting.warmup!r}")
    device = resolve_device(setting.device)
    clock_function(setting.clock, device, setting.threads or torch.get_num_threads())  # refuse a clock that cannot work
    if setting.compile_backend is not None:
        from tttlm.models.compiled import check_backend

        check_backend(setting.compile_backend)
    setting = PrefillSetting(**{**asdict(setting), "device": str(device)})
    modes = [None] if setting.compile_backend is None else [None, setting.compile_backend]
    cases = [
        (case, context, mode)
        for case in expand_cases(archs, sizes, ttt_forms)
        for context in sorted(contexts)
        for mode in modes
    ]
    records = []
    with CaseProgress("bench prefill", len(cases), out) as progress:
        for case, context, mode in cases:
            progress.start(f"{case.label} {case.size} T={context}{'' if mode is None else f' compiled ({mode})'}")
            reason = skip_reason(case, device)
            how = {} if mode is None else {"compiled": True, "backend": mode}
            if reason is not None:
                record = _record(case, context, setting, setting.chunk_size, skipped=reason, **how)
            elif not fresh_process:
                record = measure_case(case, context, setting, mode)
            else:
                try:
                    record = in_fresh_process(measure_case, case, context, setting, mode)
                except BrokenProcessPool:
                    reason = "the process died (killed for lack of memory?)"
                    record = _record(case, context, setting, setting.chunk_size, skipped=reason, **how)
            records.append(record)
            result = f"skipped: {record.skipped}" if record.skipped else f"{record.ms_per_token:.3g} ms/token"
            if record.compile_s is not None:
                result += f", compiled in {record.compile_s:.1f} s"
            progress.done([asdict(record)], result)
    return records


# ------------------------------------------------------------------------------------------------ crossover


@dataclass(frozen=True)
class Crossover:
    """Where ``first`` becomes faster than ``second`` at one size (ms/token of the prefill).

    ``context``: the crossover, linearly interpolated between the last measured context where ``first`` is not
    faster and the next (from which on it stays faster); equal to the smallest measured context when ``first``
    is faster everywhere (``below_range``); None when ``first`` is not faster at the largest measured context.
    ``ratios``: ``first`` / ``second`` ms per token at every context measured for both.
    """

    first: str
    second: str
    size: str
    context: float | None
    below_range: bool
    ratios: dict[int, float]

    def describe(self) -> str:
        if self.context is None:
            top = max(self.ratios, default=0)
            return f"{self.first} is not faster than {self.second} up to {context_label(top)} tokens ({self.size})"
        where = "at every measured context, from" if self.below_range else "from about"
        return f"{self.first} is faster than {self.second} {where} {self.context:,.0f} tokens ({self.size})"


def parse_pair(text: str) -> tuple[str, str]:
    """``"A,B"`` with A and B registry archs, each optionally ``arch:form`` (e.g. ``ttt-linear:triton``)."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if len(names) != 2:
        raise ValueError(f"crossover needs two archs as A,B (e.g. ttt-linear,transformer); got {text!r}")
    for name in names:
        arch, _, form = name.partition(":")
        if arch not in ARCHS or (form and form not in BENCH_TTT_FORMS):
            raise ValueError(
                f"crossover: {name!r} is not an arch[:form]; archs: {', '.join(ARCHS)}; forms: {BENCH_TTT_FORMS}"
            )
    return names[0], names[1]


def _times(records: Sequence[Record], name: str, size: str) -> dict[int, float]:
    """ms/token by context of ``name`` ("arch" or "arch:form"; a plain TTT arch means its dual form)."""
    arch, _, form = name.partition(":")
    mine = [
        r
        for r in records
        if r["arch"] == arch and r["size"] == size and r["ms_per_token"] is not None and not r.get("compiled")
    ]
    forms = {r["form"] for r in mine}
    wanted = form or ("dual" if "dual" in forms else None)
    return {r["context"]: r["ms_per_token"] for r in mine if r["form"] == wanted}


def crossover(records: Sequence[Record], first: str, second: str, size: str) -> Crossover | None:
    """The crossover of ``first`` against ``second`` at ``size`` from prefill records (JSON dicts), or None when
    fewer than one context was measured for both."""
    a, b = _times(records, first, size), _times(records, second, size)
    contexts = sorted(set(a) & set(b))
    if not contexts:
        return None
    ratios = {c: a[c] / b[c] for c in contexts}
    diff = [a[c] - b[c] for c in contexts]
    # the first index from which ``first`` stays faster (a single noisy point does not make a crossover)
    start = len(contexts)
    while start > 0 and diff[start - 1] < 0:
        start -= 1
    if start == len(contexts):
        return Crossover(first, second, size, None, False, ratios)
    if start == 0:
        return Crossover(first, second, size, float(contexts[0]), True, ratios)
    lo, hi = contexts[start - 1], contexts[start]
    point = lo + (hi - lo) * diff[start - 1] / (diff[start - 1] - diff[start])
    return Crossover(first, second, size, point, False, ratios)


# ------------------------------------------------------------------------------------------------ tables, plot


def label(record: Record) -> str:
    """The arch, its TTT form and " compiled" for a compiled record (records before --compile existed: eager)."""
    name = record["arch"] if record.get("form") is None else f"{record['arch']} ({record['form']})"
    return f"{name} compiled" if record.get("compiled") else name


def _time_cell(r: Record) -> str:
    return spread(r["ms_per_token"], r["min_ms_per_token"], r["max_ms_per_token"])


def _memory_cell(r: Record) -> str:
    if r["peak_memory_mb"] is None:
        return "-"
    return f"{r['peak_memory_mb']:,.0f} (+{r['peak_memory_mb'] - r['baseline_memory_mb']:,.0f})"


def tables(records: Sequence[Record]) -> list[TextTable]:
    """Per size: ms/token (median, min–max), peak memory, FLOPs/token and achieved GFLOP/s by context; crossovers
    against the Transformer."""
    out = []
    for size in dict.fromkeys(r["size"] for r in records):
        rows = [r for r in records if r["size"] == size]
        chunk = rows[0]["chunk_size"]
        how = "one call" if chunk is None else f"chunks of {chunk} tokens"
        clock = "CPU time" if rows[0].get("clock") == "cpu" else "wall clock"
        out += [
            pivot(
                f"{size}: prefill ms per token ({how}, {clock}; median, min–max)", rows, label, "context", _time_cell
            ),
            pivot(f"{size}: peak memory MiB (+ above the built model)", rows, label, "context", _memory_cell),
            pivot(f"{size}: forward FLOPs per token", rows, label, "context", lambda r: si(r["flops_per_token"])),
            pivot(f"{size}: achieved GFLOP/s", rows, label, "context", lambda r: fmt(r["gflop_per_s"])),
        ]
        names = dict.fromkeys(
            r["arch"] if r["form"] is None else f"{r['arch']}:{r['form']}" for r in rows if not r.get("compiled")
        )
        found = [crossover(records, name, "transformer", size) for name in names if name != "transformer"]
        found = [c for c in found if c is not None]
        if found:
            table = TextTable(f"{size}: ms/token ratio to the Transformer, and crossover", ["model"])
            contexts = sorted({c for x in found for c in x.ratios})
            table.headers += [*map(context_label, contexts), "faster from"]
            for x in found:
                cells = [f"{x.ratios[c]:.2f}" if c in x.ratios else "-" for c in contexts]
                where = "-" if x.context is None else ("≤ " if x.below_range else "≈ ") + f"{x.context:,.0f}"
                table.rows.append([x.first, *cells, where])
            out.append(table)
    return out


def plot(records: Sequence[Record], path: Path) -> None:
    """ms/token and peak memory vs context (log-x), one row of panels per size."""
    from tttlm.bench.plots import Panel, curves, plot_panels

    panels = []
    for size in dict.fromkeys(r["size"] for r in records):
        rows = [r for r in records if r["size"] == size]
        panels.append(Panel(f"{size}: prefill time per token", "ms / token", curves(rows, label, "context", _ms)))
        memory = curves(rows, label, "context", _memory)
        panels.append(Panel(f"{size}: peak memory above the built model", "MiB", memory))
    device, threads = (records[0]["device"], records[0]["threads"]) if records else ("?", "?")
    plot_panels(panels, path, f"tttlm bench prefill ({device}, torch threads: {threads})")


def _ms(r: Record) -> float | None:
    return r["ms_per_token"]


def _memory(r: Record) -> float | None:
    return None if r["peak_memory_mb"] is None else r["peak_memory_mb"] - r["baseline_memory_mb"]


# ------------------------------------------------------------------------------------------------ command line


def _bench_prefill(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    setting = PrefillSetting(
        args.chunk_size, args.repeats, args.warmup, args.threads, args.device, args.clock,
        compile_backend=args.compile_backend if args.compile else None,
    )  # fmt: skip
    try:
        pair = parse_pair(args.crossover)
        with RecordsFile("prefill", args.json, args.argv) as out:
            run_prefill_bench(args.archs, args.sizes, args.contexts, args.ttt_forms, setting, not args.in_process, out)
    except ValueError as error:
        print(f"tttlm bench prefill: error: {error}", file=sys.stderr)
        return 2
    records = out.records
    console = wide_console()
    print_tables(tables(records), console)
    for line in skipped_lines(records):
        console.print(f"skipped {line}")
    for size in args.sizes:
        found = crossover(records, *pair, size)
        if found is not None:
            console.print(f"crossover: {found.describe()}")
    out.finish(plot, args.plot)
    return 0


def add_bench_prefill_command(benches: Any) -> None:
    """Register ``tttlm bench prefill`` on the ``bench`` sub-parsers."""
    from tttlm.argtypes import choice_list, int_list
    from tttlm.models.ttt.configuration import PRESETS

    parser = benches.add_parser(
        "prefill",
        help="forward time per token of a whole-model prefill vs context length, any registry archs",
        description="Time a no-grad prefill (last position's logits only) of random contexts for registry archs at "
        "size presets, each case in a fresh process: ms/token (median, min-max), peak memory, analytical FLOPs "
        "per token; prints the crossover context of two archs (--crossover).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/prefill.json"), help="records file")
    parser.add_argument("--plot", type=Path, default=None, help="PNG: ms/token and memory vs context")
    parser.add_argument("--archs", type=choice_list(tuple(ARCHS)), default=list(DEFAULT_ARCHS), help="models")
    parser.add_argument("--sizes", "--size", type=choice_list(tuple(PRESETS)), default=["tiny"], help="presets")
    parser.add_argument("--contexts", type=int_list, default=list(DEFAULT_CONTEXTS), help="context lengths")
    parser.add_argument(
        "--ttt-forms", type=choice_list(BENCH_TTT_FORMS), default=["dual"], help="TTT op forms (triton: CUDA only)"
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="prefill in calls of this many tokens")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument(
        "--clock", choices=CLOCKS, default="wall", help="cpu: CPU time of the timing thread (needs --threads 1)"
    )
    parser.add_argument("--crossover", default="ttt-linear,transformer", help="A,B: where A becomes faster than B")
    parser.add_argument(
        "--in-process", action="store_true", help="measure in this process (faster; CPU peak memory is cumulative)"
    )
    add_compile_arguments(parser)
    parser.set_defaults(func=_bench_prefill)
