"""``tttlm bench forms``: primal vs dual form of the TTT ops, forward and forward+backward, and how efficient they are.

The paper reports the dual form > 5x faster than the primal in training (JAX, TPU); this measures the same
ratio for our PyTorch ops on the machine at hand. Every record also carries the op's FLOPs/s and the fraction of the
matmul peak measured at the start of the same run (``tttlm.bench.efficiency``; square GEMMs and the op's tokens × d
× d product, in the setting's dtype, on the same clock), and the call split by one profiled call into forward and
backward kernel time and the overhead (Python, autograd, dispatch). The FLOPs are the dual form's matrix products
(``tttlm.bench.roofline.dual_matmul_flops``) for both forms: the work the function needs, which the primal form
does in more, smaller products (so its rate is the useful rate, not the hardware's); None when T is not a multiple
of b.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from tttlm.argtypes import choice_list, int_list
from tttlm.bench.efficiency import Peak, Region, measure_peak, no_region, profile_split, square_shapes
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import TextTable, fmt, wide_console
from tttlm.bench.timing import CLOCKS, clock_function, time_call
from tttlm.ops import ttt_linear, ttt_mlp
from tttlm.ops.forms import ALIASES

OPS = ("ttt_linear", "ttt_mlp")
FORMS = ("primal", "dual")  # the primal form was called "naive" (records and flags of older runs say so)
PASSES = ("fwd", "fwd+bwd")
PHASES = ("forward", "backward")


@dataclass(frozen=True)
class FormsSetting:
    """Problem size shared by every measurement of one run."""

    batch: int = 1
    heads: int = 4
    head_dim: int = 64
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class FormsRecord:
    """One measurement; ``to_json`` gives ``{"op", "form", "T", "b", "pass", "seconds", ...}``."""

    op: str
    form: str
    T: int
    b: int
    pass_: str
    seconds: float | None  # None when skipped
    min_seconds: float | None
    max_seconds: float | None
    repeats: int
    batch: int
    heads: int
    head_dim: int
    dtype: str
    skipped: str | None = None
    clock: str = "wall"
    flops: int | None = None  # the dual form's matmul FLOPs of the call (None: T not a multiple of b)
    gflop_per_s: float | None = None  # flops / seconds
    peak_gflop_per_s: float | None = None  # the matmul peak measured at the start of the run
    peak_gemm: str | None = None
    fraction_of_peak: float | None = None
    forward_s: float | None = None  # kernel seconds per call in the forward (profiled call)
    backward_s: float | None = None  # None for the forward pass
    overhead_s: float | None = None  # seconds minus the kernel seconds
    profiled_step_s: float | None = None

    def to_json(self) -> dict[str, object]:
        record = asdict(self)
        record["pass"] = record.pop("pass_")
        return record


def primal_backward_bytes(op: str, seq: int, setting: FormsSetting) -> int:
    """Estimated autograd memory of the primal form's forward+backward.

    The primal form materialises one inner model per token and autograd keeps about four tensors of that size
    (the running gradient sums and the per-token weights, for each inner layer) — measured: 4.5 GB for
    ttt_mlp at T = 2048, 4 heads, d = 64, float32.
    """
    d = setting.head_dim
    per_head = d * d if op == "ttt_linear" else 2 * d * 4 * d
    itemsize = torch.empty((), dtype=setting.dtype).element_size()
    return 4 * setting.batch * seq * setting.heads * per_head * itemsize


def make_inputs(op: str, seq: int, mini_batch_size: int, setting: FormsSetting, seed: int = 0) -> list[Tensor]:
    """Random inputs at the scale of a trained layer, as the op's positional arguments (all leaves)."""
    g = torch.Generator().manual_seed(seed)
    b, h, d, dt = setting.batch, setting.heads, setting.head_dim, setting.dtype

    def randn(*shape: int, std: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=g, dtype=dt) * std).requires_grad_()

    qkv = [randn(b, seq, h, d) for _ in range(3)]
    lr = (torch.rand(b, seq, h, generator=g, dtype=dt) / d).requires_grad_()
    if op == "ttt_linear":
        inner = [randn(h, d, d, std=0.02), randn(h, d, std=0.02)]
    else:
        inner = [randn(h, d, 4 * d, std=0.02), randn(h, 4 * d, std=0.02), randn(h, 4 * d, d, std=0.02), randn(h, d)]
    ln = [torch.ones(h, d, dtype=dt).requires_grad_(), torch.zeros(h, d, dtype=dt).requires_grad_()]
    offset = torch.zeros(mini_batch_size, dtype=dt).requires_grad_()
    return [*qkv, lr, *inner, *ln, offset]


def make_call(op: str, form: str, pass_: str, inputs: list[Tensor], mini_batch_size: int) -> Callable[..., None]:
    """A closure running one forward (no autograd graph) or one forward+backward of the op; its optional argument
    (a ``tttlm.bench.efficiency.Region``) marks the forward and the backward for the profiler."""
    fn = ttt_linear if op == "ttt_linear" else ttt_mlp

    def forward() -> Tensor:
        return fn(*inputs, mini_batch_size=mini_batch_size, form=form)[0]

    if pass_ == "fwd":

        def call(region: Region = no_region) -> None:
            with torch.no_grad(), region("forward"):
                forward()

    else:
        grad_out = torch.randn_like(inputs[0])

        def call(region: Region = no_region) -> None:
            for t in inputs:
                t.grad = None
            with region("forward"):
                z = forward()
            with region("backward"):
                z.backward(grad_out)

    return call


def op_flops(op: str, pass_: str, seq: int, mini_batch_size: int, setting: FormsSetting) -> int | None:
    """The dual form's matmul FLOPs of one call (``dual_matmul_flops``), None when T is not a multiple of b."""
    from tttlm.bench.roofline import dual_matmul_flops

    if seq % mini_batch_size:
        return None
    return dual_matmul_flops(op, pass_, seq, mini_batch_size, setting.head_dim, setting.batch, setting.heads)


def forms_peak(
    seqs: Sequence[int], setting: FormsSetting, peak_sizes: Sequence[int], clock: str, repeats: int, warmup: int
) -> Peak:
    """The matmul peak for a run: square GEMMs of ``peak_sizes`` and the op's (batch · heads · T) × d × d product
    at the longest T, in the setting's dtype."""
    tokens = setting.batch * setting.heads * max(seqs)
    shapes = [*square_shapes(peak_sizes), (tokens, setting.head_dim, setting.head_dim)]
    return measure_peak(shapes, setting.dtype, clock, max(repeats, 3), max(warmup, 1))


def run_forms_bench(
    seqs: Sequence[int] = (512, 2048, 8192),
    mini_batch_sizes: Sequence[int] = (1, 4, 16, 64),
    ops: Sequence[str] = OPS,
    passes: Sequence[str] = PASSES,
    setting: FormsSetting = FormsSetting(),
    repeats: int = 3,
    warmup: int = 1,
    max_primal_gb: float = 12.0,
    out: RecordsFile | None = None,
    clock: str = "wall",
    peak_sizes: Sequence[int] = (512, 1024, 2048),
    split: bool = True,
) -> list[FormsRecord]:
    """Time every (op, T, b, pass, form) case on ``clock`` (``tttlm.bench.timing.clock_function``), after measuring
    the matmul peak (``forms_peak``); primal forward+backward cases estimated to need more than ``max_primal_gb``
    of memory are recorded as skipped instead of run. ``split``: one more, profiled call per case for the time
    split. Each record goes to ``out`` as soon as its case has finished."""
    clock_function(clock)  # refuse a clock that cannot work before measuring anything
    peak = forms_peak(seqs, setting, peak_sizes, clock, repeats, warmup)
    records: list[FormsRecord] = []
    cases = [(op, t, b, p, f) for op in ops for t in seqs for b in mini_batch_sizes for p in passes for f in FORMS]
    with CaseProgress("bench forms", len(cases), out) as progress:
        for op, seq, b, pass_, form in cases:
            progress.start(f"{op} {form} T={seq} b={b} {pass_}")
            meta = (repeats, setting.batch, setting.heads, setting.head_dim, str(setting.dtype).removeprefix("torch."))
            need_gb = primal_backward_bytes(op, seq, setting) / 1e9
            if form == "primal" and pass_ == "fwd+bwd" and need_gb > max_primal_gb:
                reason = f"~{need_gb:.1f} GB > {max_primal_gb:g} GB"
                record = FormsRecord(op, form, seq, b, pass_, None, None, None, *meta, skipped=reason, clock=clock)
            else:
                call = make_call(op, form, pass_, make_inputs(op, seq, b, setting), b)
                t = time_call(call, repeats=repeats, warmup=warmup, clock=clock)
                flops = op_flops(op, pass_, seq, b, setting)
                rate = None if flops is None else flops / t.median / 1e9
                phases = PHASES if pass_ == "fwd+bwd" else PHASES[:1]
                parts = profile_split(call, phases, t.median, clock).fields(PHASES) if split else {}
                record = FormsRecord(
                    op, form, seq, b, pass_, t.median, t.minimum, t.maximum, *meta, clock=clock, flops=flops,
                    gflop_per_s=rate, **peak.fields(rate), **parts,
                )  # fmt: skip
            records.append(record)
            progress.done([record.to_json()], _summary(record))
    return records


def _summary(record: FormsRecord) -> str:
    if record.skipped:
        return f"skipped: {record.skipped}"
    share = "" if record.fraction_of_peak is None else f", {100 * record.fraction_of_peak:.1f} % of the matmul peak"
    return f"{record.seconds:.3g} s{share}"


def _cell(record: FormsRecord | None) -> str:
    if record is None:
        return "-"
    return f"{record.seconds:.4f}" if record.seconds is not None else f"skipped: {record.skipped}"


def print_table(records: Sequence[FormsRecord], console: Console | None = None) -> None:
    """One row per (op, T, b, pass) with both forms' median seconds, the dual speed-up (primal / dual), the dual
    form's GFLOP/s and % of the matmul peak, and its split (forward, backward kernels, overhead)."""
    by_case: dict[tuple[str, int, int, str], dict[str, FormsRecord]] = {}
    for r in records:
        by_case.setdefault((r.op, r.T, r.b, r.pass_), {})[r.form] = r
    peak = next((r for r in records if r.peak_gflop_per_s is not None), None)
    title = "TTT ops: primal vs dual form, median seconds per call"
    if peak is not None:
        title += f"; matmul peak {peak.peak_gflop_per_s:.3g} GFLOP/s ({peak.peak_gemm}, {peak.clock} clock)"
    table = Table(title=title)
    columns = ("op", "T", "b", "pass", "primal s", "dual s", "dual speed-up", "dual GFLOP/s", "dual % of peak")
    for col in (*columns, "dual fwd / bwd / overhead s"):
        table.add_column(col, justify="left" if col in ("op", "pass") else "right")
    for (op, seq, b, pass_), forms in by_case.items():
        primal, dual = forms.get("primal"), forms.get("dual")
        cells = [_cell(primal), _cell(dual)]
        ratio = "-"
        if primal and dual and primal.seconds is not None and dual.seconds is not None:
            ratio = f"{primal.seconds / dual.seconds:.1f}x"
        share = None if dual is None or dual.fraction_of_peak is None else 100 * dual.fraction_of_peak
        split = "-" if dual is None else _split_cell(dual.to_json())
        rate = None if dual is None else dual.gflop_per_s
        table.add_row(op, str(seq), str(b), pass_, *cells, ratio, fmt(rate), fmt(share, ".1f"), split)
    (console or wide_console()).print(table)


def _split_cell(record: dict[str, Any]) -> str:
    parts = [record.get(key) for key in ("forward_s", "backward_s", "overhead_s")]
    if all(part is None for part in parts):
        return "-"
    return " / ".join(fmt(part, ".3g") for part in parts)


def _by_case(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str, int, int], dict[str, dict[str, Any]]]:
    """Records by (op, pass, T, b), then by form; an older file's "naive" is the primal form."""
    by_case: dict[tuple[str, str, int, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault((r["op"], r["pass"], r["T"], r["b"]), {})[ALIASES.get(r["form"], r["form"])] = r
    return by_case


def tables(records: Sequence[dict[str, Any]]) -> list[TextTable]:
    """From JSON records: the dual speed-up (primal / dual seconds) and the dual form's seconds, one row per
    (op, pass, T), one column per mini-batch size b; with the efficiency fields, the dual form's % of the matmul
    peak and its split, one row per case."""
    by_case = _by_case(records)
    sizes = sorted({b for _, _, _, b in by_case})
    rows = list(dict.fromkeys((op, pass_, seq) for op, pass_, seq, _ in sorted(by_case)))
    headers = ["op", "pass", "T", *(f"b = {b}" for b in sizes)]
    speedup = TextTable("Dual speed-up (primal seconds / dual seconds)", headers, left=3)
    seconds = TextTable("Dual form, median seconds per call", headers, left=3)
    for op, pass_, seq in rows:
        cells = [by_case.get((op, pass_, seq, b), {}) for b in sizes]
        speedup.rows.append([op, pass_, str(seq), *map(_speedup_cell, cells)])
        seconds.rows.append([op, pass_, str(seq), *(fmt((c.get("dual") or {}).get("seconds"), ".3g") for c in cells)])
    duals = [forms["dual"] for _, forms in sorted(by_case.items()) if "dual" in forms]
    duals = [r for r in duals if r.get("peak_gflop_per_s") is not None]
    if not duals:  # a file written before the efficiency fields existed
        return [speedup, seconds]
    efficiency = TextTable(
        f"Dual form efficiency: matmul peak {duals[0]['peak_gflop_per_s']:.3g} GFLOP/s ({duals[0]['peak_gemm']}, "
        f"{duals[0].get('clock', 'wall')} clock); seconds per call in forward and backward kernels and overhead",
        ["op", "pass", "T", "b", "seconds", "GFLOP/s", "% of peak", "forward", "backward", "overhead"],
        left=4,
    )
    for r in duals:
        share = r.get("fraction_of_peak")
        efficiency.rows.append([
            r["op"], r["pass"], str(r["T"]), str(r["b"]), fmt(r["seconds"], ".3g"), fmt(r.get("gflop_per_s")),
            fmt(None if share is None else 100 * share, ".1f"),
            *(fmt(r.get(key), ".3g") for key in ("forward_s", "backward_s", "overhead_s")),
        ])  # fmt: skip
    return [speedup, seconds, efficiency]


def _speedup_cell(forms: dict[str, dict[str, Any]]) -> str:
    primal, dual = forms.get("primal"), forms.get("dual")
    if primal is None or dual is None:
        return "-"
    if primal["seconds"] is None or dual["seconds"] is None:
        return "skipped"
    return f"{primal['seconds'] / dual['seconds']:.1f}x"


def _bench_forms(args: argparse.Namespace) -> int:
    import sys

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    setting = FormsSetting(batch=args.batch, heads=args.heads, head_dim=args.head_dim)
    try:
        with RecordsFile("forms", args.json, args.argv) as out:
            records = run_forms_bench(
                seqs=args.seqs,
                mini_batch_sizes=args.mini_batch_sizes,
                ops=args.ops,
                passes=args.passes,
                setting=setting,
                repeats=args.repeats,
                warmup=args.warmup,
                max_primal_gb=args.max_primal_gb,
                out=out,
                clock=args.clock,
                peak_sizes=args.peak_sizes,
                split=not args.no_split,
            )
    except ValueError as error:  # a clock that cannot time this setting
        print(f"tttlm bench forms: error: {error}", file=sys.stderr)
        return 2
    print_table(records)
    out.finish()
    return 0


def add_bench_forms_command(benches: Any) -> None:
    """Register ``tttlm bench forms`` on the ``bench`` sub-parsers."""
    forms = benches.add_parser(
        "forms",
        help="primal vs dual form of the TTT ops, forward and forward+backward, FLOPs/s against the matmul peak",
        description="Time the primal and dual forms of ttt_linear and ttt_mlp and report the speed-up, the FLOPs/s "
        "against the matmul peak measured in the same run, and the split of a call into kernels and overhead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    forms.add_argument("--json", type=Path, default=Path("bench-results/forms.json"), help="where to write records")
    forms.add_argument("--seqs", type=int_list, default=[512, 2048, 8192], help="sequence lengths T")
    forms.add_argument("--mini-batch-sizes", type=int_list, default=[1, 4, 16, 64], help="TTT mini-batch sizes b")
    forms.add_argument("--ops", type=choice_list(OPS), default=list(OPS), help="ops to time")
    forms.add_argument("--passes", type=choice_list(PASSES), default=list(PASSES), help="passes to time")
    forms.add_argument("--batch", type=int, default=1, help="batch size")
    forms.add_argument("--heads", type=int, default=FormsSetting.heads, help="number of heads")
    forms.add_argument("--head-dim", type=int, default=64, help="head dimension d")
    forms.add_argument("--repeats", type=int, default=3, help="timed calls per case (the median is reported)")
    forms.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    forms.add_argument(
        "--max-primal-gb",
        "--max-naive-gb",  # the primal form's earlier name
        dest="max_primal_gb",
        type=float,
        default=12.0,
        help="skip primal fwd+bwd cases estimated to need more memory",
    )
    forms.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    forms.add_argument(
        "--clock",
        choices=CLOCKS,
        default="wall",
        help="wall: wall-clock time; cpu: CPU time of the timing thread (needs --threads 1)",
    )
    forms.add_argument("--peak-sizes", type=int_list, default=[512, 1024, 2048], help="square GEMMs of the peak")
    forms.add_argument("--no-split", action="store_true", help="skip the profiled call per case (no time split)")
    forms.set_defaults(func=_bench_forms)
