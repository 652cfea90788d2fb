"""``tttlm bench forms``: primal (naive) vs dual form of the TTT ops, forward and forward+backward.

The paper reports the dual form > 5x faster than the primal in training (JAX, TPU); this measures the same
ratio for our PyTorch ops on the machine at hand.
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
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import TextTable, fmt
from tttlm.bench.timing import time_call
from tttlm.ops import ttt_linear, ttt_mlp

OPS = ("ttt_linear", "ttt_mlp")
FORMS = ("naive", "dual")
PASSES = ("fwd", "fwd+bwd")


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

    def to_json(self) -> dict[str, object]:
        record = asdict(self)
        record["pass"] = record.pop("pass_")
        return record


def naive_backward_bytes(op: str, seq: int, setting: FormsSetting) -> int:
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


def make_call(op: str, form: str, pass_: str, inputs: list[Tensor], mini_batch_size: int) -> Callable[[], None]:
    """A closure running one forward (no autograd graph) or one forward+backward of the op."""
    fn = ttt_linear if op == "ttt_linear" else ttt_mlp

    def forward() -> Tensor:
        return fn(*inputs, mini_batch_size=mini_batch_size, form=form)[0]

    if pass_ == "fwd":

        def call() -> None:
            with torch.no_grad():
                forward()

    else:
        grad_out = torch.randn_like(inputs[0])

        def call() -> None:
            for t in inputs:
                t.grad = None
            forward().backward(grad_out)

    return call


def run_forms_bench(
    seqs: Sequence[int] = (512, 2048, 8192),
    mini_batch_sizes: Sequence[int] = (1, 4, 16, 64),
    ops: Sequence[str] = OPS,
    passes: Sequence[str] = PASSES,
    setting: FormsSetting = FormsSetting(),
    repeats: int = 3,
    warmup: int = 1,
    max_naive_gb: float = 12.0,
    out: RecordsFile | None = None,
) -> list[FormsRecord]:
    """Time every (op, T, b, pass, form) case; naive forward+backward cases estimated to need more than
    ``max_naive_gb`` of memory are recorded as skipped instead of run. Each record goes to ``out`` as soon as
    its case has finished."""
    records: list[FormsRecord] = []
    cases = [(op, t, b, p, f) for op in ops for t in seqs for b in mini_batch_sizes for p in passes for f in FORMS]
    with CaseProgress("bench forms", len(cases), out) as progress:
        for op, seq, b, pass_, form in cases:
            progress.start(f"{op} {form} T={seq} b={b} {pass_}")
            meta = (repeats, setting.batch, setting.heads, setting.head_dim, str(setting.dtype).removeprefix("torch."))
            need_gb = naive_backward_bytes(op, seq, setting) / 1e9
            if form == "naive" and pass_ == "fwd+bwd" and need_gb > max_naive_gb:
                reason = f"~{need_gb:.1f} GB > {max_naive_gb:g} GB"
                record = FormsRecord(op, form, seq, b, pass_, None, None, None, *meta, skipped=reason)
            else:
                inputs = make_inputs(op, seq, b, setting)
                t = time_call(make_call(op, form, pass_, inputs, b), repeats=repeats, warmup=warmup)
                record = FormsRecord(op, form, seq, b, pass_, t.median, t.minimum, t.maximum, *meta)
            records.append(record)
            progress.done(
                [record.to_json()], f"skipped: {record.skipped}" if record.skipped else f"{record.seconds:.3g} s"
            )
    return records


def _cell(record: FormsRecord | None) -> str:
    if record is None:
        return "-"
    return f"{record.seconds:.4f}" if record.seconds is not None else f"skipped: {record.skipped}"


def print_table(records: Sequence[FormsRecord], console: Console | None = None) -> None:
    """One row per (op, T, b, pass) with both forms' median seconds and the dual speed-up (naive / dual)."""
    by_case: dict[tuple[str, int, int, str], dict[str, FormsRecord]] = {}
    for r in records:
        by_case.setdefault((r.op, r.T, r.b, r.pass_), {})[r.form] = r
    table = Table(title="TTT ops: primal (naive) vs dual form, median seconds per call")
    for col in ("op", "T", "b", "pass", "naive s", "dual s", "dual speed-up"):
        table.add_column(col, justify="left" if col in ("op", "pass") else "right")
    for (op, seq, b, pass_), forms in by_case.items():
        naive, dual = forms.get("naive"), forms.get("dual")
        cells = [_cell(naive), _cell(dual)]
        ratio = "-"
        if naive and dual and naive.seconds is not None and dual.seconds is not None:
            ratio = f"{naive.seconds / dual.seconds:.1f}x"
        table.add_row(op, str(seq), str(b), pass_, *cells, ratio)
    (console or Console()).print(table)


def tables(records: Sequence[dict[str, Any]]) -> list[TextTable]:
    """From JSON records: the dual speed-up (naive / dual seconds) and the dual form's seconds, one row per
    (op, pass, T), one column per mini-batch size b."""
    by_case: dict[tuple[str, str, int, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault((r["op"], r["pass"], r["T"], r["b"]), {})[r["form"]] = r
    sizes = sorted({b for _, _, _, b in by_case})
    rows = list(dict.fromkeys((op, pass_, seq) for op, pass_, seq, _ in sorted(by_case)))
    headers = ["op", "pass", "T", *(f"b = {b}" for b in sizes)]
    speedup = TextTable("Dual speed-up (naive seconds / dual seconds)", headers, left=3)
    seconds = TextTable("Dual form, median seconds per call", headers, left=3)
    for op, pass_, seq in rows:
        cells = [by_case.get((op, pass_, seq, b), {}) for b in sizes]
        speedup.rows.append([op, pass_, str(seq), *map(_speedup_cell, cells)])
        seconds.rows.append([op, pass_, str(seq), *(fmt((c.get("dual") or {}).get("seconds"), ".3g") for c in cells)])
    return [speedup, seconds]


def _speedup_cell(forms: dict[str, dict[str, Any]]) -> str:
    naive, dual = forms.get("naive"), forms.get("dual")
    if naive is None or dual is None:
        return "-"
    if naive["seconds"] is None or dual["seconds"] is None:
        return "skipped"
    return f"{naive['seconds'] / dual['seconds']:.1f}x"


def _bench_forms(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    setting = FormsSetting(batch=args.batch, heads=args.heads, head_dim=args.head_dim)
    with RecordsFile("forms", args.json, args.argv) as out:
        records = run_forms_bench(
            seqs=args.seqs,
            mini_batch_sizes=args.mini_batch_sizes,
            ops=args.ops,
            passes=args.passes,
            setting=setting,
            repeats=args.repeats,
            warmup=args.warmup,
            max_naive_gb=args.max_naive_gb,
            out=out,
        )
    print_table(records)
    out.finish()
    return 0


def add_bench_forms_command(benches: Any) -> None:
    """Register ``tttlm bench forms`` on the ``bench`` sub-parsers."""
    forms = benches.add_parser(
        "forms",
        help="primal (naive) vs dual form of the TTT ops, forward and forward+backward",
        description="Time the naive (primal) and dual forms of ttt_linear and ttt_mlp and report the speed-up.",
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
        "--max-naive-gb", type=float, default=12.0, help="skip naive fwd+bwd cases estimated to need more memory"
    )
    forms.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    forms.set_defaults(func=_bench_forms)
