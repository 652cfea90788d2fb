"""The op forms computed by fused GPU kernels (``"triton"``, ``"auto"``), resolved lazily.

Importing this module (and so ``tttlm``) never imports triton: the kernels live in
``tttlm/ops/ttt_linear/triton.py`` and ``tttlm/ops/ttt_mlp/triton.py`` and are imported on the first call that
needs them. ``form="triton"`` runs them or raises a clear error; ``form="auto"`` runs them on CUDA tensors when
triton is installed and the shapes are supported, and falls back to the PyTorch ``"dual"`` form otherwise (the
only silent fallback: an explicit ``"triton"`` never falls back).

Under ``TRITON_INTERPRET=1`` (set before triton is first imported) the kernels run on CPU tensors through
Triton's interpreter; that is how they are tested without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HEAD_DIMS = (16, 32, 64, 128)
MAX_MINI_BATCH = 64


def triton_installed() -> bool:
    """Whether the ``triton`` package can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """Whether Triton's CPU interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(device: torch.device) -> str | None:
    """Why the triton kernels cannot run on tensors on ``device`` here, or None when they can."""
    if not triton_installed():
        return "triton is not installed (pip install triton)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreter_enabled():
        return None
    env = os.environ.get("TRITON_INTERPRET")
    setting = "unset" if env is None else f"= {env!r}"
    return f"tensors on {device.type} and TRITON_INTERPRET {setting}"


def unsupported_reason(q: Tensor, mini_batch_size: int, hidden: int | None = None) -> str | None:
    """Why the kernels do not support these shapes/dtypes, or None. ``hidden``: TTT-MLP inner width."""
    d = q.shape[-1]
    if q.dtype not in KERNEL_DTYPES:
        return f"q has dtype {q.dtype}; the kernels take float32, float16 or bfloat16 (use form='dual')"
    if d not in HEAD_DIMS:
        return f"head dim {d} is not one of {HEAD_DIMS} (use form='dual')"
    if not 1 <= mini_batch_size <= MAX_MINI_BATCH:
        return f"mini_batch_size {mini_batch_size} is above {MAX_MINI_BATCH} (use form='dual')"
    if hidden is not None and (hidden < 16 or hidden % 16):
        return f"TTT-MLP hidden width {hidden} is not a positive multiple of 16 (use form='dual')"
    return None


def resolve_kernel_form(form: str, q: Tensor, mini_batch_size: int, hidden: int | None = None) -> str:
    """``"triton"`` or ``"dual"`` for ``form`` in ("triton", "auto"); raise for an impossible ``"triton"``."""
    if form == "auto":
        usable = q.is_cuda and triton_installed() and unsupported_reason(q, mini_batch_size, hidden) is None
        return "triton" if usable else "dual"
    reason = unavailable_reason(q.device)
    if reason is not None:
        raise RuntimeError(
            f"form='triton' needs a CUDA GPU or TRITON_INTERPRET=1; got {reason}. "
            "Use form='dual' (or form='auto', which falls back to 'dual' when the kernels cannot run)"
        )
    reason = unsupported_reason(q, mini_batch_size, hidden)
    if reason is not None:
        raise ValueError(f"form='triton' does not support these inputs: {reason}")
    return "triton"


class KernelForm:
    """A whole-sequence form whose implementation is imported on first call (``module.function``).

    Unlike the chunk functions of the other forms it is not driven by ``scan.run_ttt``: it takes the arguments
    of ``forms.run_form`` ``(q, k, v, lr, inner, ln_weight, ln_bias, token_offset, initial_state, eps)`` and returns
    ``(z, TTTState)``.
    """

    def __init__(self, module: str, function: str) -> None:
        self.module, self.function = module, function
        self._fn: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._fn is None:
            self._fn = getattr(importlib.import_module(self.module), self.function)
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"KernelForm({self.module}.{self.function})"
