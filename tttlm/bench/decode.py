"""``tttlm bench decode``: milliseconds per generated token after contexts of growing length, for any registry arch.

A TTT or Mamba model's state has a fixed size (TTT: the inner weights, the open mini-batch's gradient sums and conv
states), so decoding one token costs the same after 1K or 32K tokens of context; attention reads a KV cache that
grows with the context (sliding-window attention: up to its window). For every (arch, form, size) the model is
built once; for each context a random prompt of that length is prefilled (``streaming.prefill``, in chunks where the
arch's cache allows, else in one call), then ``warmup + tokens`` single-token steps are taken through the one call
contract ``model(input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)`` and the timed ones reported
(median, min, max). The cache's size after the prompt and the analytical FLOPs of a step are recorded as well.

``--compile``: every case is measured twice, eager and with the decode steps compiled (``torch.compile`` of the
model's call; the prompt is prefilled eagerly; cold compile caches; ``compiled: true`` in its record, "arch
compiled" in the tables). A decode step's inputs change from token to token (the KV cache grows, the position
advances, a TTT layer's mini-batch closes every b tokens), so graphs compile at several tokens, not only the first:
``compile_s`` is the wall-clock seconds by which the decode steps of the context (warm-up and timed) exceeded the
median step, summed; ``graphs`` counts what Dynamo compiled.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tttlm.bench.cases import (
    BENCH_TTT_FORMS,
    DEFAULT_ARCHS,
    add_compile_arguments,
    build_case,
    check_positive,
    expand_cases,
    resolve_device,
    skip_reason,
    tensor_mb,
)
from tttlm.bench.flops import decode_flops_per_token, has_flop_formula
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import Record, TextTable, pivot, print_tables, si, skipped_lines, spread
from tttlm.bench.timing import CLOCKS, clock_function, load_1m
from tttlm.models.hf_compat import cache_argument, output_cache
from tttlm.models.registry import ARCHS

DEFAULT_CONTEXTS = (1024, 4096, 16384, 32768)
# the tiny preset: the whole default run takes about a minute on 2 CPU cores; 125m (--sizes tiny,125m) is the
# papers' scale
DEFAULT_SIZES = ("tiny",)


@dataclass(frozen=True)
class DecodeRecord:
    """Median decode latency after ``context`` tokens (spread in min/max) and the cache's size then; the timing
    fields are None when the case was skipped."""

    arch: str
    form: str | None
    size: str
    context: int
    ms_per_token: float | None
    min_ms: float | None
    max_ms: float | None
    tokens: int
    warmup: int
    flops_per_token: float | None
    cache_mb: float | None
    parameters: int | None
    device: str
    threads: int
    clock: str
    load_1m: float | None
    skipped: str | None = None
    # torch.compile (records before --compile existed: eager): the backend, the decode steps' wall seconds above
    # the median step (compiles and recompiles) and the graphs Dynamo compiled for this context
    compiled: bool = False
    backend: str | None = None
    compile_s: float | None = None
    graphs: int | None = None


def _decode_ms(
    model: Any, cache: Any, tokens: int, warmup: int, device: torch.device, clock: str, generator: torch.Generator
) -> tuple[list[float], list[float]]:
    """Decode ``warmup + tokens`` random tokens continuing ``cache``; milliseconds of the timed ones on ``clock``,
    and wall-clock seconds of every step."""
    import time

    now = clock_function(clock, device)
    samples, walls = [], []
    for i in range(warmup + tokens):
        ids = torch.randint(model.config.vocab_size, (1, 1), generator=generator).to(device)
        start, wall = now(), time.perf_counter()
        cache = output_cache(model(input_ids=ids, **cache_argument(cache), use_cache=True, logits_to_keep=1))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall)
        if i >= warmup:
            samples.append(1e3 * (now() - start))
    return samples, walls


def _measure(
    model: Any,
    context: int,
    tokens: int,
    warmup: int,
    prefill_chunk: int,
    device: torch.device,
    clock: str,
    seed: int,
    stepper: Any = None,
) -> dict[str, Any]:
    """Prefill a random prompt of ``context`` tokens, then time decoding; the measured fields of a record.
    ``stepper``: what decodes (the compiled model; None: ``model`` itself); the prompt is prefilled by ``model``."""
    from tttlm.models import compiled
    from tttlm.models.streaming import prefill

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(model.config.vocab_size, (1, context), generator=generator).to(device)
    cache = prefill(model, ids, prefill_chunk, token_loss=False).past_key_values
    cache_mb = tensor_mb(cache)  # before decoding adds to it
    counted = compiled.CompileCounters.now()
    ms, walls = _decode_ms(model if stepper is None else stepper, cache, tokens, warmup, device, clock, generator)
    measured = {
        "ms_per_token": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "cache_mb": cache_mb,
        "parameters": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip
    if stepper is not None:
        median = statistics.median(walls)
        measured["compile_s"] = sum(max(0.0, wall - median) for wall in walls)
        measured["graphs"] = compiled.CompileCounters.now().graphs - counted.graphs
    return measured


@torch.no_grad()
def run_decode_bench(
    archs: Sequence[str] = DEFAULT_ARCHS,
    sizes: Sequence[str] = DEFAULT_SIZES,
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    ttt_forms: Sequence[str] = ("dual",),
    tokens: int = 32,
    warmup: int = 4,
    prefill_chunk: int = 2048,
    device: str | torch.device | None = None,
    clock: str = "wall",
    seed: int = 0,
    out: RecordsFile | None = None,
    compile_backend: str | None = None,
) -> list[DecodeRecord]:
    """Measure decode ms/token after each context length for every (size, arch, form) case, in this process;
    each record goes to ``out`` as soon as it is measured. ``compile_backend``: also measure every case with the
    decode steps compiled by this torch.compile backend (None: eager only)."""
    from tttlm.models import compiled
    from tttlm.models.registry import make_config

    if compile_backend is not None:
        compiled.check_backend(compile_backend)
    check_positive("contexts", contexts)
    check_positive("tokens and prefill_chunk", [tokens, prefill_chunk])
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0; got {warmup!r}")
    device = resolve_device(device)
    clock_function(clock, device)  # refuse a clock that cannot work before measuring anything
    cases = expand_cases(archs, sizes, ttt_forms)
    modes = [None] if compile_backend is None else [None, compile_backend]
    records: list[DecodeRecord] = []
    with CaseProgress("bench decode", len(cases) * len(contexts) * len(modes), out) as progress:
        for case in cases:
            config = make_config(case.arch, case.size, **({} if case.form is None else {"ttt_form": case.form}))
            reason = skip_reason(case, device)
            model = None if reason else build_case(case, device, seed)
            flops = {c: decode_flops_per_token(config, c) if has_flop_formula(config) else None for c in contexts}
            for mode in modes:
                how = {} if mode is None else {"compiled": True, "backend": mode}
                with contextlib.nullcontext() if mode is None else compiled.cold_compile_cache():
                    # the compiled call of the same module: the prefill stays eager, the weights are shared
                    stepper = None if mode is None or model is None else compiled.compiled_view(model, mode)
                    for context in sorted(contexts):
                        progress.start(f"{case.label} {case.size}: decode after {context}{' compiled' if how else ''}")
                        measured: dict[str, Any] = {"skipped": reason}
                        if model is not None:
                            try:
                                measured = _measure(
                                    model, context, tokens, warmup, prefill_chunk, device, clock, seed, stepper
                                )
                            except (RuntimeError, ValueError) as error:  # a failed compile, out of memory, ...
                                measured = {"skipped": f"{type(error).__name__}: {error}"[:300]}
                        record = DecodeRecord(
                            case.arch, case.form, case.size, context, tokens=tokens, warmup=warmup,
                            flops_per_token=flops[context], device=str(device), threads=torch.get_num_threads(),
                            clock=clock, load_1m=load_1m(), **{**_UNMEASURED, **measured, **how},
                        )  # fmt: skip
                        records.append(record)
                        progress.done([asdict(record)], _result(record))
    return records


_UNMEASURED = {"ms_per_token": None, "min_ms": None, "max_ms": None, "cache_mb": None, "parameters": None}


def _result(record: DecodeRecord) -> str:
    """A finished case in a few words, for its progress line."""
    if record.skipped:
        return f"skipped: {record.skipped}"
    compiling = "" if record.compile_s is None else f", compiling {record.compile_s:.1f} s"
    return f"{record.ms_per_token:.3g} ms/token{compiling}"


def _normalised(record: Record) -> Record:
    """Records written before decode covered every arch name the model by ``model`` ("ttt-linear-tiny") and
    ``layer_type``; give them ``arch`` and ``form`` like the current ones."""
    if "arch" in record:
        return record
    return {**record, "arch": f"ttt-{record['layer_type']}", "form": None}


def label(record: Record) -> str:
    """The arch, its TTT form and " compiled" for a compiled record (records before --compile existed: eager)."""
    record = _normalised(record)
    name = record["arch"] if record.get("form") is None else f"{record['arch']} ({record['form']})"
    return f"{name} compiled" if record.get("compiled") else name


def _ratio(rows: list[Record]) -> str:
    done = [r for r in rows if r.get("ms_per_token") is not None]
    if len(done) < 2:
        return "-"
    return f"{done[-1]['ms_per_token'] / done[0]['ms_per_token']:.2f}x"


def _time_cell(r: Record) -> str:
    return spread(r.get("ms_per_token"), r.get("min_ms"), r.get("max_ms"))


def tables(records: Sequence[Record]) -> list[TextTable]:
    """Per size: ms/token by context (with the ratio of the longest to the shortest context), the cache's MiB
    and the FLOPs of a step."""
    out = []
    for size in dict.fromkeys(r["size"] for r in records):
        rows = [_normalised(r) for r in records if r["size"] == size]
        out.append(
            pivot(f"{size}: decode ms per token ({_clock(rows)}; median, min–max)", rows, label, "context", _time_cell,
                  extra=[("longest / shortest", _ratio)])
        )  # fmt: skip
        if any(r.get("cache_mb") is not None for r in rows):
            out.append(pivot(f"{size}: cache MiB after the context", rows, label, "context", _cache_cell))
        if any(r.get("flops_per_token") is not None for r in rows):
            out.append(pivot(f"{size}: FLOPs per decoded token", rows, label, "context", _flops_cell))
    return out


def _clock(rows: list[Record]) -> str:
    return "CPU time" if rows[0].get("clock") == "cpu" else "wall clock"


def _cache_cell(r: Record) -> str:
    return "-" if r.get("cache_mb") is None else f"{r['cache_mb']:.3g}"


def _flops_cell(r: Record) -> str:
    return si(r.get("flops_per_token"))


def plot(records: Sequence[Record], path: Path) -> None:
    """ms/token and cache size vs context (log-x), one row of panels per size."""
    from tttlm.bench.plots import Panel, curves, plot_panels

    panels = []
    for size in dict.fromkeys(r["size"] for r in records):
        rows = [_normalised(r) for r in records if r["size"] == size]
        ms = curves(rows, label, "context", lambda r: r.get("ms_per_token"))
        cache = curves(rows, label, "context", lambda r: r.get("cache_mb"))
        panels += [
            Panel(f"{size}: decode time per token", "ms / token", ms),
            Panel(f"{size}: cache size after the context", "MiB", cache, logy=True),
        ]
    plot_panels(panels, path, f"tttlm bench decode ({records[0]['device'] if records else '?'})")


# ------------------------------------------------------------------------------------------------ command line


def _bench_decode(args: argparse.Namespace) -> int:
    import sys

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with RecordsFile("decode", args.json, args.argv) as out:
            run_decode_bench(
                args.archs, args.sizes, args.contexts, args.ttt_forms, args.tokens, args.warmup, args.prefill_chunk,
                args.device, args.clock, out=out, compile_backend=args.compile_backend if args.compile else None,
            )  # fmt: skip
    except ValueError as error:
        print(f"tttlm bench decode: error: {error}", file=sys.stderr)
        return 2
    records = out.records
    print_tables(tables(records))
    for line in skipped_lines(records):
        print(f"skipped {line}")
    out.finish(plot, args.plot)
    return 0


def add_bench_decode_command(benches: Any) -> None:
    """Register ``tttlm bench decode`` on the ``bench`` sub-parsers."""
    from tttlm.argtypes import choice_list, int_list
    from tttlm.models.ttt.configuration import PRESETS

    parser = benches.add_parser(
        "decode",
        help="decode latency per token after contexts of growing length, any registry archs",
        description="Prefill random contexts into registry models and time single-token decoding after each "
        "(median, min-max), with the cache size and analytical FLOPs per step.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/decode.json"), help="records file")
    parser.add_argument("--plot", type=Path, default=None, help="PNG: ms/token and cache size vs context")
    parser.add_argument("--archs", type=choice_list(tuple(ARCHS)), default=list(DEFAULT_ARCHS), help="models")
    parser.add_argument(
        "--sizes", "--size", type=choice_list(tuple(PRESETS)), default=list(DEFAULT_SIZES), help="presets"
    )
    parser.add_argument(
        "--ttt-forms", type=choice_list(BENCH_TTT_FORMS), default=["dual"], help="TTT op forms (triton: CUDA only)"
    )
    parser.add_argument("--contexts", type=int_list, default=list(DEFAULT_CONTEXTS), help="context lengths")
    parser.add_argument("--tokens", type=int, default=32, help="timed decode steps per context (median reported)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed decode steps before timing")
    parser.add_argument("--prefill-chunk", type=int, default=2048, help="tokens per prefill call")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument(
        "--clock", choices=CLOCKS, default="wall", help="cpu: CPU time of the timing thread (needs --threads 1)"
    )
    add_compile_arguments(parser)
    parser.set_defaults(func=_bench_decode)
