"""``torch.compile`` for registry models: the training loss call, prefill and decode, with the rules that make
every arch's forward trace (or a clear error where it cannot).

What compiles, measured on this project's 2-core CPU (inductor, PyTorch 2.13; docs/ARCHITECTURE.md has the table):
every arch's forward and backward trace; the graph breaks left are at ops that write into slices (``out=`` into
non-contiguous views: Mamba's selective scan, and the gated delta rule's chunk op, which is excluded from tracing,
``ops.gated_delta_rule._chunk_rule``), which run eager between compiled pieces. TTT-E2E cannot be trained
compiled: its meta-gradient differentiates through the inner steps' gradients (double backward), which AOTAutograd
does not support.

RoPE takes its real form while traced (``tttlm.layers.rope.apply_rope``: Dynamo cannot trace the complex view's
``storage_offset`` test), and ``models.base.check_input_ids`` skips reading the id range back (``.item()``, a graph
break) under compile; ``compiled_loss`` checks the ids before the compiled call instead.

Shapes: ``dynamic=None`` (automatic). Training calls have one shape (micro-batch × seq_len), so they compile once;
the one float that changes between steps, a TTT layer's ``inner_lr_scale`` during the inner-lr warm-up, costs one
recompile (the second value makes it symbolic), where ``dynamic=False`` recompiled at every warm-up step until
Dynamo's recompile limit sent the model back to eager. Evaluation is not compiled (another grad mode and a partial
last batch would each be another compile of the whole model for a few forwards).
"""

from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

# torch.compile backends: inductor generates fused kernels (C++ on the CPU, Triton on CUDA); aot_eager traces
# forward and backward like inductor but runs the captured graphs with eager kernels (fast to compile: what the
# tests use for the archs whose inductor compile takes minutes); eager only runs Dynamo's capture
BACKENDS = ("inductor", "aot_eager", "eager")
DEFAULT_BACKEND = "inductor"
# archs that cannot be trained compiled, and why
NOT_TRAINABLE_COMPILED = {
    "ttt-e2e": (
        "ttt-e2e's training differentiates through the gradients of its inner steps (the meta-gradient, a double "
        "backward), which torch.compile's AOTAutograd does not support (PyTorch 2.13: 'torch.compile with "
        "aot_autograd does not currently support double backward'); train it with train.compile: false"
    ),
}


class CompileUnsupportedError(ValueError):
    """The arch cannot run compiled in the requested mode; the message says why and what to do instead."""


def check_compilable(arch: str | None, *, training: bool) -> None:
    """Raise ``CompileUnsupportedError`` when ``arch`` (a registry name; None: unknown, allowed) cannot run compiled
    (``training``: forward and backward; otherwise inference: prefill and decode)."""
    if training and arch in NOT_TRAINABLE_COMPILED:
        raise CompileUnsupportedError(NOT_TRAINABLE_COMPILED[arch])


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"torch.compile backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


@dataclass
class CompileCounters:
    """What Dynamo did so far in this process: graphs compiled and graph breaks (``torch._dynamo.utils.counters``)."""

    graphs: int
    graph_breaks: int

    @classmethod
    def now(cls) -> CompileCounters:
        from torch._dynamo.utils import counters

        return cls(int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values())))


def compile_module(model: nn.Module, backend: str = DEFAULT_BACKEND, *, dynamic: bool | None = None) -> nn.Module:
    """Compile ``model``'s calls in place (``nn.Module.compile``: its ``state_dict`` keeps its keys, no
    ``_orig_mod.`` prefix) and return it; every later ``model(...)``, the ones inside ``streaming.prefill`` and
    ``generate`` included, runs the compiled forward."""
    check_backend(backend)
    model.compile(backend=backend, dynamic=dynamic)
    return model


def compiled_view(model: nn.Module, backend: str = DEFAULT_BACKEND, *, dynamic: bool | None = None) -> nn.Module:
    """A compiled caller of ``model`` (``torch.compile(model)``: the same parameters, ``model`` itself stays eager):
    for decoding compiled while the prompt is prefilled eagerly. Not for checkpoints (its state_dict's keys carry
    an ``_orig_mod.`` prefix)."""
    check_backend(backend)
    return torch.compile(model, backend=backend, dynamic=dynamic)


def compiled_loss(
    model: nn.Module, backend: str = DEFAULT_BACKEND, *, dynamic: bool | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss(input_ids, labels)``: the scalar training loss ``model(input_ids=..., labels=..., use_cache=False)
    .loss`` of (batch, seq) ids and labels, compiled; ``model`` itself is left as it is (its checkpoints, its eager
    calls for evaluation). The ids' range is checked here, eagerly (see the module docstring)."""
    from tttlm.models.base import check_input_ids

    check_backend(backend)

    def loss_of(input_ids: Tensor, labels: Tensor) -> Tensor:
        return model(input_ids=input_ids, labels=labels, use_cache=False).loss

    # Dynamo keeps its compiled graphs per code object, across closures: a code object of this call's own keeps
    # the graphs of another model (an earlier run in the same process) from counting towards the recompile limit
    loss_of.__code__ = loss_of.__code__.replace()
    compiled = torch.compile(loss_of, backend=backend, dynamic=dynamic)
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)

    def loss(input_ids: Tensor, labels: Tensor) -> Tensor:
        if vocab_size is not None:
            check_input_ids(input_ids, vocab_size)
        return compiled(input_ids, labels)

    return loss


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of ``fn()`` (a compile is mostly host work on the calling thread and its compile
    workers, so the CPU time of one thread would miss part of it)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_cold_dir: Path | None = None


@contextlib.contextmanager
def cold_compile_cache() -> Iterator[Path]:
    """Compile from nothing inside the context, so that a measured compile time is what a first run pays and not a
    cache hit of an earlier process: Dynamo's in-memory caches reset, inductor's FX-graph and AOTAutograd caches
    off, and its kernel cache (``TORCHINDUCTOR_CACHE_DIR``) in a directory of this process's own, removed when the
    process exits (inductor keeps paths into it for the process's lifetime). Within one process a later compile
    may still reuse identical kernels of an earlier one; the benchmarks measure each case in a fresh process.
    Yields the kernel cache directory."""
    global _cold_dir
    if _cold_dir is None:
        _cold_dir = Path(tempfile.mkdtemp(prefix="tttlm-inductor-"))
        # runs at exit in the main process and in multiprocessing workers alike (which skip atexit)
        multiprocessing.util.Finalize(None, shutil.rmtree, args=(_cold_dir,), kwargs={"ignore_errors": True},
                                      exitpriority=0)  # fmt: skip
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_cold_dir)
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    try:
        with (
            inductor_config.patch(fx_graph_cache=False, autotune_local_cache=False),
            functorch_config.patch(enable_autograd_cache=False),
        ):
            yield _cold_dir
    finally:
        if previous is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous
