"""``tttlm bench roofline``: achieved GFLOP/s of the TTT ops' dual form against this machine's measured roofline.

In one run: the matmul peak (float32 GEMM of a few square sizes, the best median), the memory bandwidth (a large
copy and a large add; the sloped part of the roofline), then the dual form of ``ttt_linear`` / ``ttt_mlp``
(forward, forward+backward) at a sweep of (T, b, d). The FLOPs of a call are counted analytically: exactly the
matrix products the implementation performs, a multiply-add being 2 FLOPs (``dual_matmul_flops``; checked against
``torch.utils.flop_counter.FlopCounterMode`` in the tests). Elementwise work (LayerNorm, GELU, masks) is not
counted, as a FLOP counter for matmul-bound code would not count it either.

Times are medians on the chosen clock: by default the CPU time of the (single) timing thread, which on a shared
machine is what a call costs on an idle core (cache and memory-bandwidth contention from other jobs still show),
for the peak and the ops alike.

Arithmetic intensity uses the compulsory memory traffic (``compulsory_bytes``): every input read once, every
output written once and, with a backward, the per-mini-batch states that autograd keeps written once and read
once. Points far right of the ridge (peak / bandwidth) and far below the roof are bound neither by FLOPs nor by
memory but by something else: for this code, the per-operation cost of many small kernels.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tttlm.bench.forms import OPS, PASSES, FormsSetting, make_call, make_inputs
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import Record, TextTable, fmt, print_tables, wide_console
from tttlm.bench.timing import CLOCKS, clock_function, load_1m, time_call

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Roof:
    """The measured roofline: float32 matmul peak and memory bandwidth."""

    peak_gflop_per_s: float
    bandwidth_gb_per_s: float

    def attainable(self, intensity: float) -> float:
        """min(peak, bandwidth · intensity) in GFLOP/s for ``intensity`` FLOP/byte."""
        return min(self.peak_gflop_per_s, self.bandwidth_gb_per_s * intensity)

    @classmethod
    def from_records(cls, records: Sequence[Record]) -> Roof:
        """The best matmul rate and the best bandwidth among the ``matmul_peak`` and ``bandwidth`` records."""
        return cls(
            max(r["gflop_per_s"] for r in records if r["kind"] == "matmul_peak"),
            max(r["gb_per_s"] for r in records if r["kind"] == "bandwidth"),
        )


def measure_matmul_peak(sizes: Sequence[int], clock: str = "wall", repeats: int = 5, warmup: int = 2) -> list[Record]:
    """Time ``A @ B`` (float32, n × n) for every n in ``sizes``; one record per size with its GFLOP/s."""
    records = []
    for n in sizes:
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        timing = time_call(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), repeats, warmup, clock=clock)
        rate = 2 * n**3 / timing.median / 1e9
        records.append({"kind": "matmul_peak", "size": n, "seconds": timing.median, "gflop_per_s": rate})
    return records


def measure_bandwidth(megabytes: float, clock: str = "wall", repeats: int = 5, warmup: int = 1) -> list[Record]:
    """Memory bandwidth from a copy (reads n, writes n) and an add (reads 2n, writes n) of float32 arrays of
    ``megabytes`` each (choose them well above the last-level cache). One record per kernel, in GB/s."""
    n = max(1, int(megabytes * 1e6) // FLOAT32_BYTES)
    a, b, out = torch.rand(n), torch.rand(n), torch.empty(n)
    kernels = {
        "copy": (lambda: out.copy_(a), 2 * n * FLOAT32_BYTES),
        "add": (lambda: torch.add(a, b, out=out), 3 * n * FLOAT32_BYTES),
    }
    records = []
    for name, (fn, moved) in kernels.items():
        seconds = time_call(fn, repeats, warmup, clock=clock).median
        records.append(
            {"kind": "bandwidth", "kernel": name, "bytes": moved, "seconds": seconds, "gb_per_s": moved / seconds / 1e9}
        )
    return records


def dual_matmul_flops(
    op: str, pass_: str, seq: int, mini_batch: int, head_dim: int, batch: int = 1, heads: int = 1
) -> int:
    """FLOPs of the matrix products of one call of the dual form (``form="dual"``, fresh state, with the inner
    bias and LayerNorm as in the model), multiply-add = 2; ``pass_`` "fwd" or "fwd+bwd" (a loss on the outputs
    only, as ``tttlm bench forms`` times it).

    ``seq`` must be a multiple of ``mini_batch``, so that every mini-batch goes through the span function
    (``tttlm.ops.ttt_linear.dual.dual_linear_span``, ``tttlm.ops.ttt_mlp.dual.dual_mlp_span``). Per mini-batch of
    n = b tokens and (batch, head), with d the head dim, h = 4d the MLP's hidden width and e = d + 1, f = h + 1 the
    widths of the inputs augmented with a column of ones (the bias row of the weights):

    - ttt_linear: ``Q Kᵀ`` (n×e · e×n, batched before the loop), ``K W`` and ``Q W`` (n×e · e×d), ``η G``
      (n×n · n×d) and the update ``Kᵀ (lr G)`` (e×n · n×d): 2 n² e + 6 n e d + 2 n² d;
    - ttt_mlp: ``Q Kᵀ``; the keys through the MLP and back (``K W1``, ``X2 W2``, ``G2 W2ᵀ``), the queries'
      reads (``Q W1``, ``η1 G1``, ``X2q X2kᵀ``, ``X2q W2``, ``η2 G2``), the two updates:
      2 n² (e + h + f + d) + 6 n e h + 6 n f d + 2 n d h.

    The backward differentiates every product w.r.t. both operands (all depend on the inputs), 2× its FLOPs,
    except the last mini-batch's update, which only reaches the final state, unused by the loss.
    """
    if seq % mini_batch:
        raise ValueError(f"seq must be a multiple of mini_batch; got seq={seq}, mini_batch={mini_batch}")
    n, d = mini_batch, head_dim
    e = d + 1
    if op == "ttt_linear":
        per_chunk, update = 2 * n * n * e + 6 * n * e * d + 2 * n * n * d, 2 * e * n * d
    elif op == "ttt_mlp":
        h = 4 * d
        f = h + 1
        per_chunk = 2 * n * n * (e + h + f + d) + 6 * n * e * h + 6 * n * f * d + 2 * n * d * h
        update = 2 * e * n * h + 2 * f * n * d
    else:
        raise ValueError(f"op must be one of {OPS}; got {op!r}")
    forward = per_chunk * (seq // mini_batch)
    total = forward if pass_ == "fwd" else 3 * forward - 2 * update
    return total * batch * heads


def inner_param_count(op: str, head_dim: int) -> int:
    """Floats of the inner model per (batch, head): W, b (linear) or W1, b1, W2, b2 (MLP, hidden 4d)."""
    d = head_dim
    return d * d + d if op == "ttt_linear" else 2 * d * 4 * d + 4 * d + d


def compulsory_bytes(op: str, pass_: str, seq: int, mini_batch: int, head_dim: int, batch: int, heads: int) -> int:
    """Minimum float32 memory traffic of one call (the arithmetic-intensity denominator).

    Forward: q, k, v, lr read and z written once per token, the inner model read and the final state written.
    Forward+backward adds: ∂L/∂z read, the gradients of q, k, v, lr written, the per-mini-batch inner models
    autograd keeps (written in the forward, read in the backward) and the weights' gradients written.
    """
    d = head_dim
    tokens = batch * heads * seq
    params = batch * heads * inner_param_count(op, d)
    floats = tokens * (3 * d + 1 + d) + 2 * params
    if pass_ == "fwd+bwd":
        floats += tokens * (d + 3 * d + 1) + 2 * params * (seq // mini_batch) + params
    return floats * FLOAT32_BYTES


@dataclass(frozen=True)
class RooflinePoint:
    """One timed dual-form call, placed on the roofline."""

    op: str
    pass_: str
    seq: int
    mini_batch: int
    head_dim: int
    heads: int
    batch: int
    seconds: float
    gflops: float
    gflop_per_s: float
    peak_gflop_per_s: float
    fraction_of_peak: float
    bytes: int
    intensity_flop_per_byte: float
    attainable_gflop_per_s: float
    clock: str
    load_1m: float | None

    def to_json(self) -> Record:
        record: Record = {"kind": "ttt"}
        record.update(asdict(self))
        record["pass"] = record.pop("pass_")
        return record


def time_dual(
    op: str,
    pass_: str,
    seq: int,
    mini_batch: int,
    setting: FormsSetting,
    roof: Roof,
    repeats: int,
    warmup: int,
    clock: str = "wall",
) -> RooflinePoint:
    """Time one dual-form case and compute its achieved GFLOP/s and intensity."""
    inputs = make_inputs(op, seq, mini_batch, setting)
    call = make_call(op, "dual", pass_, inputs, mini_batch)
    seconds = time_call(call, repeats=repeats, warmup=warmup, clock=clock).median
    dims = (seq, mini_batch, setting.head_dim)
    flops = dual_matmul_flops(op, pass_, *dims, setting.batch, setting.heads)
    moved = compulsory_bytes(op, pass_, *dims, setting.batch, setting.heads)
    rate = flops / seconds / 1e9
    intensity = flops / moved
    return RooflinePoint(
        op,
        pass_,
        *dims,
        setting.heads,
        setting.batch,
        seconds,
        flops / 1e9,
        rate,
        roof.peak_gflop_per_s,
        rate / roof.peak_gflop_per_s,
        moved,
        intensity,
        roof.attainable(intensity),
        clock,
        load_1m(),
    )


def run_roofline_bench(
    seqs: Sequence[int] = (2048, 8192),
    mini_batch_sizes: Sequence[int] = (4, 16, 64),
    head_dims: Sequence[int] = (64,),
    ops: Sequence[str] = OPS,
    passes: Sequence[str] = PASSES,
    heads: int = 4,
    batch: int = 1,
    peak_sizes: Sequence[int] = (512, 1024, 2048),
    bandwidth_mb: float = 128.0,
    repeats: int = 3,
    warmup: int = 1,
    clock: str = "wall",
    out: RecordsFile | None = None,
) -> list[Record]:
    """Measure the roofline, then time every (op, pass, T, b, d) case on ``clock`` (see
    ``tttlm.bench.timing.clock_function``). Returns all records (kinds ``matmul_peak``, ``bandwidth``, ``ttt``);
    the roof's and then each case's go to ``out`` as soon as they are measured."""
    clock_function(clock)  # refuse a clock that cannot work, or sizes that cannot be counted, before measuring
    uneven = [(t, b) for t in seqs for b in mini_batch_sizes if t % b]
    if uneven:
        raise ValueError(f"every T must be a multiple of every b (whole mini-batches); got (T, b) = {uneven}")
    cases = [(op, p, t, b, d) for op in ops for d in head_dims for t in seqs for b in mini_batch_sizes for p in passes]
    with CaseProgress("bench roofline", 1 + len(cases), out) as progress:
        progress.start("the roof: float32 GEMM peak and memory bandwidth")
        records = measure_matmul_peak(peak_sizes, clock) + measure_bandwidth(bandwidth_mb, clock)
        for r in records:
            r.update(clock=clock, load_1m=load_1m())
        roof = Roof.from_records(records)
        progress.done(records, f"{roof.peak_gflop_per_s:.1f} GFLOP/s, {roof.bandwidth_gb_per_s:.1f} GB/s")
        for op, pass_, seq, b, d in cases:
            progress.start(f"{op} dual T={seq} b={b} d={d} {pass_}")
            setting = FormsSetting(batch=batch, heads=heads, head_dim=d)
            record = time_dual(op, pass_, seq, b, setting, roof, repeats, warmup, clock).to_json()
            records.append(record)
            progress.done([record], f"{record['gflop_per_s']:.1f} GFLOP/s")
    return records


def tables(records: Sequence[Record]) -> list[TextTable]:
    """From JSON records: the measured roof (GEMM sizes, bandwidth kernels), then one row per timed dual-form
    case with its GFLOP/s, % of the peak and arithmetic intensity."""
    roof = Roof.from_records(records)
    clock = "CPU time" if records[0].get("clock") == "cpu" else "wall clock"
    measured = TextTable(
        f"Roof ({clock}): peak {roof.peak_gflop_per_s:.1f} GFLOP/s, bandwidth {roof.bandwidth_gb_per_s:.1f} GB/s, "
        f"ridge at {roof.peak_gflop_per_s / roof.bandwidth_gb_per_s:.1f} FLOP/byte",
        ["kernel", "seconds", "rate"],
    )
    for r in records:
        if r["kind"] == "matmul_peak":
            measured.rows.append([f"sgemm {r['size']}³", fmt(r["seconds"], ".4g"), f"{r['gflop_per_s']:.1f} GFLOP/s"])
        elif r["kind"] == "bandwidth":
            size = f"{r['bytes'] / 1e6:.0f} MB moved"
            measured.rows.append([f"{r['kernel']} ({size})", fmt(r["seconds"], ".4g"), f"{r['gb_per_s']:.1f} GB/s"])
    headers = ["op", "pass", "T", "b", "d", "heads", "seconds", "GFLOP", "GFLOP/s", "% of peak", "FLOP/byte"]
    points = TextTable(f"TTT dual form, float32, batch 1 ({clock}, median)", headers, left=2)
    for r in records:
        if r["kind"] == "ttt":
            points.rows.append(
                [
                    *(str(r[k]) for k in ("op", "pass", "seq", "mini_batch", "head_dim", "heads")),
                    fmt(r["seconds"], ".4g"),
                    fmt(r["gflops"], ".3g"),
                    f"{r['gflop_per_s']:.1f}",
                    f"{100 * r['fraction_of_peak']:.1f}",
                    f"{r['intensity_flop_per_byte']:.1f}",
                ]
            )
    return [measured, points]


def plot(records: Sequence[Record], path: Path) -> None:
    """Log-log roofline: attainable GFLOP/s vs FLOP/byte (the measured peak and bandwidth) with the timed points
    (marker per op, colour per pass, labelled with T/b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roof = Roof.from_records(records)

    points = [r for r in records if r["kind"] == "ttt"]
    intensities = [float(r["intensity_flop_per_byte"]) for r in points] or [1.0]
    ridge = roof.peak_gflop_per_s / roof.bandwidth_gb_per_s
    low, high = min(min(intensities), ridge) / 4, max(max(intensities), ridge) * 4
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = [low, ridge, high]
    ax.plot(xs, [roof.attainable(x) for x in xs], "k-", lw=2, label="roofline (measured)")
    ax.axhline(roof.peak_gflop_per_s / 2, color="grey", ls=":", lw=1, label="50 % of peak")
    markers = {"ttt_linear": "o", "ttt_mlp": "s"}
    colours = {"fwd": "tab:blue", "fwd+bwd": "tab:red"}
    for op, pass_ in dict.fromkeys((r["op"], r["pass"]) for r in points):
        group = [r for r in points if (r["op"], r["pass"]) == (op, pass_)]
        ax.scatter(
            [r["intensity_flop_per_byte"] for r in group],
            [r["gflop_per_s"] for r in group],
            marker=markers.get(str(op), "x"),
            color=colours.get(str(pass_), "tab:green"),
            label=f"{op} dual {pass_}",
            zorder=3,
        )
        for r in group:
            ax.annotate(
                f"{r['seq'] // 1024}K/{r['mini_batch']}",
                (r["intensity_flop_per_byte"], r["gflop_per_s"]),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="arithmetic intensity (FLOP / byte of compulsory traffic)",
        ylabel="GFLOP/s",
        title=f"TTT dual form vs roofline: peak {roof.peak_gflop_per_s:.0f} GFLOP/s, "
        f"{roof.bandwidth_gb_per_s:.1f} GB/s, {torch.get_num_threads()} thread(s), {records[0].get('clock', 'wall')} "
        "clock; labels T/b",
    )
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ command line


def add_bench_roofline_command(benches: Any) -> None:
    """Register ``tttlm bench roofline`` on the ``bench`` sub-parsers."""
    from tttlm.argtypes import choice_list, int_list

    parser = benches.add_parser(
        "roofline",
        help="achieved GFLOP/s of the TTT dual form vs this machine's measured matmul peak and bandwidth",
        description="Measure the float32 matmul peak and the memory bandwidth, time the dual form of the TTT ops "
        "(forward, forward+backward) and place every case on the roofline: JSON records, a table and a PNG.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/roofline.json"), help="records")
    parser.add_argument("--plot", type=Path, default=Path("bench-results/roofline.png"), help="roofline figure")
    parser.add_argument("--ops", type=choice_list(OPS), default=list(OPS), help="ops to time")
    parser.add_argument("--passes", type=choice_list(PASSES), default=list(PASSES), help="passes to time")
    parser.add_argument("--seqs", type=int_list, default=[2048, 8192], help="sequence lengths T")
    parser.add_argument("--mini-batch-sizes", type=int_list, default=[4, 16, 64], help="TTT mini-batch sizes b")
    parser.add_argument("--head-dims", type=int_list, default=[64], help="head dimensions d")
    parser.add_argument("--heads", type=int, default=4, help="number of heads")
    parser.add_argument("--batch", type=int, default=1, help="batch size")
    parser.add_argument("--peak-sizes", type=int_list, default=[512, 1024, 2048], help="square GEMM sizes")
    parser.add_argument("--bandwidth-mb", type=float, default=128.0, help="MB per array of the bandwidth kernels")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: PyTorch's default)")
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="cpu",
        help="cpu: CPU time of the timing thread, what a call costs on an idle core of a shared machine (needs "
        "--threads 1); wall: wall-clock time",
    )
    parser.set_defaults(func=_bench_roofline)


def _bench_roofline(args: argparse.Namespace) -> int:
    import sys

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with RecordsFile("roofline", args.json, args.argv) as out:
            records = run_roofline_bench(
                seqs=args.seqs,
                mini_batch_sizes=args.mini_batch_sizes,
                head_dims=args.head_dims,
                ops=args.ops,
                passes=args.passes,
                heads=args.heads,
                batch=args.batch,
                peak_sizes=args.peak_sizes,
                bandwidth_mb=args.bandwidth_mb,
                repeats=args.repeats,
                warmup=args.warmup,
                clock=args.clock,
                out=out,
            )
    except ValueError as error:  # a clock that cannot time this setting, a T that is not a multiple of b
        print(f"tttlm bench roofline: error: {error}", file=sys.stderr)
        return 2
    print_tables(tables(records), wide_console())
    out.finish(plot, args.plot)
    return 0
