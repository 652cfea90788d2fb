"""What the model benchmarks (prefill, decode, train) share: which (arch, TTT form) cases to run, building their
models, running a case in a fresh process, and measuring memory.

Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` over the measured calls; on the CPU the process's
peak resident set size (``getrusage`` ``ru_maxrss``), which only means something for one case per process — hence
``in_fresh_process``. ``baseline`` figures are taken after the model is built, before the first call, so
``peak − baseline`` is what the calls themselves needed (activations, caches, allocator slack).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from tttlm.models.registry import ARCHS, build, make_config
from tttlm.models.stack.configuration import StackConfig
from tttlm.models.ttt.configuration import TTTConfig

# the architectures of the papers' speed figures (issue 10), the default of every model benchmark
DEFAULT_ARCHS = ("ttt-linear", "ttt-mlp", "transformer", "swa", "mamba", "mamba2", "gated-deltanet")
# TTT op forms a benchmark can select; triton needs a CUDA GPU
BENCH_TTT_FORMS = ("dual", "triton")
NEEDS_CUDA = "needs CUDA"  # a record's ``skipped`` reason

T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    """One model to measure: ``form`` is the TTT op form for archs with TTT layers, None for the others."""

    arch: str
    size: str
    form: str | None

    @property
    def label(self) -> str:
        return self.arch if self.form is None else f"{self.arch} ({self.form})"


def has_ttt_layers(arch: str, size: str) -> bool:
    """Whether ``build(arch, size)`` contains TTT layers (so that a ``ttt_form`` override applies)."""
    config = make_config(arch, size)
    if isinstance(config, TTTConfig):
        return True
    return isinstance(config, StackConfig) and any("ttt" in mixers for mixers in config.layer_mixers)


def expand_cases(archs: Sequence[str], sizes: Sequence[str], ttt_forms: Sequence[str]) -> list[Case]:
    """Every (size, arch[, form]) case, sizes outermost; archs without TTT layers once, with form None."""
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        raise ValueError(f"unknown arch(s) {unknown or archs!r}; choose from {', '.join(ARCHS)}")
    bad_forms = [f for f in ttt_forms if f not in BENCH_TTT_FORMS]
    if bad_forms or not ttt_forms:
        raise ValueError(f"ttt forms must be among {', '.join(BENCH_TTT_FORMS)}; got {list(ttt_forms)!r}")
    cases = []
    for size in sizes:
        for arch in archs:
            forms = ttt_forms if has_ttt_layers(arch, size) else [None]
            cases += [Case(arch, size, form) for form in forms]
    return cases


def skip_reason(case: Case, device: torch.device) -> str | None:
    """Why ``case`` cannot be measured on ``device`` (the Triton kernels need CUDA; the interpreter's timings would
    mean nothing), or None."""
    if case.form == "triton":
        if device.type != "cuda":
            return NEEDS_CUDA
        from tttlm.ops.kernel_forms import triton_installed

        if not triton_installed():
            return "triton is not installed (pip install triton)"
    return None


def build_case(case: Case, device: torch.device, seed: int = 0) -> nn.Module:
    """The case's freshly initialised model (seeded), in eval mode on ``device``."""
    torch.manual_seed(seed)
    overrides = {} if case.form is None else {"ttt_form": case.form}
    return build(case.arch, case.size, **overrides).eval().to(device)


def check_positive(name: str, values: Sequence[int]) -> None:
    """Raise a ValueError naming ``name`` unless ``values`` is a non-empty sequence of positive integers."""
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers; got {list(values)!r}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device; None means CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    return device


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocations since ``reset_peak_memory``, or the process's peak RSS (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_kind(device: torch.device) -> str:
    return "cuda_max_allocated" if device.type == "cuda" else "peak_rss"


def tensor_mb(obj: Any) -> float:
    """MiB of the distinct tensor storages reachable from ``obj`` (a cache: tuples, lists, dicts, objects)."""
    seen: set[int] = set()
    storages: dict[int, int] = {}

    def walk(x: Any) -> None:
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(x, (list, tuple, set)):
            for item in x:
                walk(item)
        elif isinstance(x, dict):
            for item in x.values():
                walk(item)
        elif hasattr(x, "__dict__") and not isinstance(x, (type, nn.Module)):
            for item in vars(x).values():
                walk(item)

    walk(obj)
    return sum(storages.values()) / 2**20


def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new process, so that its peak RSS is that call's alone.

    The process is forked from a fork server that has imported ``fn``'s module (torch, transformers) but run
    nothing, so a case starts in well under a second instead of the seconds an interpreter needs to import
    torch and transformers, and no thread pool is forked. A worker that dies (e.g. killed for memory) raises
    ``concurrent.futures.process.BrokenProcessPool`` instead of hanging.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([fn.__module__])  # no effect once the server runs: same modules anyway
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def add_compile_arguments(parser: Any) -> None:
    """``--compile`` and ``--compile-backend`` of the model benchmarks (train, prefill, decode)."""
    from tttlm.models.compiled import BACKENDS, DEFAULT_BACKEND

    parser.add_argument(
        "--compile",
        action="store_true",
        help="measure every case twice: eager and with torch.compile (records: compiled, compile_s; cold compile "
        "caches, so compile_s is what a first run pays)",
    )
    parser.add_argument(
        "--compile-backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help="torch.compile backend of --compile (aot_eager: traced graphs on eager kernels, a cheap check)",
    )
