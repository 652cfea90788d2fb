"""What ``tttlm bench train`` and ``tttlm bench forms`` say beyond seconds: the matmul peak of this machine measured in
the same run, the fraction of it a call achieves, and where a step's time goes (profiler-based).

Peak. The best rate of ``torch.mm`` over a few GEMM shapes in the dtype the timed code computes in, on the same clock
as the timed calls: large squares (what the machine can do at all) and the shapes of the timed code's own largest
products (a model's tokens × hidden × MLP width, an op's tokens × d × d), so that the fraction says how far a call is
from what matmuls could do here, not from a datasheet.

Split. One extra call runs under ``torch.profiler`` with a ``record_function`` around each phase (forward,
backward, optimizer). A phase's *kernel* time is the self time (its own, not its callees') of the ATen operators
inside it that do arithmetic or move data; views, reshapes and allocations are metadata, their time is dispatch
(``METADATA_OPS``). A composite operator's own self time (``aten::linear`` around its ``aten::addmm``) is small
and counts as kernel time.
Everything else — Python, the autograd engine's bookkeeping, the dispatcher above the kernels, custom autograd
Functions' Python code — is *overhead*: the median unprofiled call minus the kernel times, so that the parts add up
to the reported time per call and the profiler's own cost (which it adds outside the kernels) is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from tttlm.bench.tables import Record
from tttlm.bench.timing import clock_function, time_call

# ATen operators that only make a new view, reshape metadata or allocate: their self time is dispatch, not a kernel
METADATA_OPS = frozenset(
    f"aten::{name}"
    for name in (
        "view", "_unsafe_view", "as_strided", "reshape", "_reshape_alias", "select", "slice", "narrow", "transpose",
        "t", "permute", "expand", "expand_as", "unsqueeze", "squeeze", "flatten", "unflatten", "view_as", "split",
        "split_with_sizes", "chunk", "unbind", "detach", "alias", "lift_fresh", "resolve_conj", "resolve_neg",
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "result_type", "is_nonzero",
        "diagonal", "movedim", "swapaxes", "numpy_T", "mT", "_nested_tensor_from_mask_left_aligned", "item",
        "_local_scalar_dense", "contiguous", "to", "type_as", "set_", "resize_",
    )
)  # fmt: skip
Region = Callable[[str], AbstractContextManager[object]]


def no_region(name: str) -> AbstractContextManager[object]:
    """The ``Region`` of an unprofiled call: no marks."""
    return nullcontext()


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, clock: str, repeats: int = 3, warmup: int = 1) -> float:
    """GFLOP/s of ``torch.mm`` of an (m, k) by a (k, n) matrix of ``dtype`` (2 m k n FLOPs), median on ``clock``."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    seconds = time_call(lambda: torch.mm(a, b, out=out), repeats, warmup, clock=clock).median
    return 2 * m * k * n / seconds / 1e9


@dataclass(frozen=True)
class Peak:
    """The best measured GEMM rate and every shape tried: ``[{"m", "k", "n", "gflop_per_s"}, ...]``."""

    gflop_per_s: float
    dtype: str
    gemms: list[Record]

    @property
    def shape(self) -> str:
        """The shape that gave the peak, "m×k×n"."""
        best = max(self.gemms, key=lambda g: g["gflop_per_s"])
        return f"{best['m']}x{best['k']}x{best['n']}"

    def fields(self, gflop_per_s: float | None) -> Record:
        """The record fields for a call that achieved ``gflop_per_s`` (None: no FLOP count)."""
        return {
            "peak_gflop_per_s": self.gflop_per_s,
            "peak_gemm": f"{self.shape} {self.dtype}",
            "fraction_of_peak": None if gflop_per_s is None else gflop_per_s / self.gflop_per_s,
        }


def measure_peak(
    shapes: Sequence[tuple[int, int, int]], dtype: torch.dtype, clock: str, repeats: int = 3, warmup: int = 1
) -> Peak:
    """The matmul peak over ``shapes`` ((m, k, n) each; duplicates measured once) in ``dtype`` on ``clock``."""
    gemms = [
        {"m": m, "k": k, "n": n, "gflop_per_s": gemm_rate(m, k, n, dtype, clock, repeats, warmup)}
        for m, k, n in dict.fromkeys(shapes)
    ]
    return Peak(max(g["gflop_per_s"] for g in gemms), str(dtype).removeprefix("torch."), gemms)


def square_shapes(sizes: Sequence[int]) -> list[tuple[int, int, int]]:
    return [(n, n, n) for n in sizes]


@dataclass(frozen=True)
class Split:
    """Seconds per call in each phase's kernels, and the overhead: the rest of the (unprofiled) call time."""

    kernels: dict[str, float]
    overhead: float
    profiled_seconds: float  # the profiled call on the same clock, profiler cost included

    def fields(self, phases: Sequence[str]) -> Record:
        """``{"<phase>_s": ..., "overhead_s": ..., "profiled_step_s": ...}`` for every phase of ``phases`` (a phase
        the call did not run gets None)."""
        record: Record = {f"{phase}_s": self.kernels.get(phase) for phase in phases}
        record["overhead_s"] = self.overhead
        record["profiled_step_s"] = self.profiled_seconds
        return record


def is_kernel(event: torch.autograd.profiler_util.FunctionEvent) -> bool:
    """An ATen operator that is not metadata (``METADATA_OPS``); ``aten::mm`` calls ``aten::resolve_conj``, so
    "calls no other operator" would not do."""
    return event.name.startswith("aten::") and event.name not in METADATA_OPS


def profile_split(
    call: Callable[[Region], object], phases: Sequence[str], seconds: float, clock: str = "wall"
) -> Split:
    """Run ``call(region)`` once under the profiler (``region(name)`` marks a phase; every phase should be one of
    ``phases``) and split ``seconds`` (the unprofiled time of such a call on ``clock``) into each phase's kernel
    time and the overhead (``seconds`` minus all kernel time, at least 0). Kernels outside every phase count as
    overhead.

    The profiler stamps wall time; on the "cpu" clock the kernel times are scaled by the profiled call's CPU time
    over its wall time, so that time the thread spent waiting for a core (a loaded machine) is not taken for work.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    now = clock_function(clock)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = now()
        with record_function("tttlm::call"):
            call(record_function)
        elapsed = now() - start
    events = prof.events()
    ranges = {e.name: e.time_range for e in events if e.name in phases}
    whole = next(e.time_range for e in events if e.name == "tttlm::call")
    wall = (whole.end - whole.start) / 1e6
    scale = elapsed / wall if clock == "cpu" and wall > 0 else 1.0
    kernels = dict.fromkeys(ranges, 0.0)
    for event in events:
        if not is_kernel(event):
            continue
        begin = event.time_range.start
        phase = next((p for p, span in ranges.items() if span.start <= begin < span.end), None)
        if phase is not None:
            kernels[phase] += scale * event.self_cpu_time_total / 1e6
    overhead = max(0.0, seconds - sum(kernels.values()))
    return Split(kernels, overhead, elapsed)
