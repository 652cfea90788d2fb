"""The names the TTT ops and layers share, and the one dispatcher that runs an op in the form asked for.

Every TTT op computes the same function in several forms:

- ``"primal"``: the primal mini-batch form, every per-token W_i materialised (the readable reference, slow);
  ``"naive"`` is its earlier name, still accepted;
- ``"dual"``: matmul-only dual form (default; training and prefill);
- ``"step"``: token by token through the O(1) decode step;
- ``"triton"``: fused GPU kernels (CUDA, or CPU under ``TRITON_INTERPRET=1``), else an error;
- ``"auto"``: ``"triton"`` on CUDA tensors when triton is installed and the shapes are supported, else ``"dual"``.

The first three are ``ScanForm``s driven by ``scan.run_ttt``; the kernels take the whole sequence
(``kernel_forms.KernelForm``). ``run_form`` is the unchecked core both ops and the layers call once the arguments
are known to be valid.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from tttlm.ops.kernel_forms import KernelForm, resolve_kernel_form
from tttlm.ops.scan import ScanForm, run_ttt
from tttlm.ops.state import TTTState

# the inner models of the TTT layers: TTT-Linear (a linear map) and TTT-MLP (a two-layer MLP)
INNER_MODELS = ("linear", "mlp")
FORMS = ("primal", "dual", "step", "triton", "auto")
# what a layer or a model config may ask for training and prefill (single tokens always take the step path)
SEQUENCE_FORMS = ("primal", "dual", "triton", "auto")
ALIASES = {"naive": "primal"}


def canonical_form(form: object, allowed: tuple[str, ...] = FORMS) -> str:
    """``form`` with an alias replaced by its name; raise ``ValueError`` unless it is one of ``allowed``."""
    name = ALIASES.get(form, form) if isinstance(form, str) else form
    if name not in allowed:
        aliases = [alias for alias, target in ALIASES.items() if target in allowed]
        raise ValueError(f"form must be one of {list(allowed)} (or the alias {', '.join(aliases)}); got {form!r}")
    return name


class OpForms(NamedTuple):
    """How one op computes each form: its three scan forms and its fused kernels (imported on first use)."""

    primal: ScanForm
    dual: ScanForm
    step: ScanForm
    kernel: KernelForm


def run_form(
    op: OpForms,
    form: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    inner: tuple[Tensor, ...],
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    token_offset: Tensor,
    initial_state: TTTState | None,
    eps: float,
    kernel_hidden: int | None = None,
) -> tuple[Tensor, TTTState]:
    """Run ``op`` in ``form`` (a canonical name) on validated inputs.

    q, k, v: (batch, seq, heads, d); lr: (batch, seq, heads); ``inner`` the initial inner weights; ``token_offset``
    (b,) the learnable step-size offsets, whose length is the mini-batch size b (its one source from here on).
    ``kernel_hidden``: TTT-MLP's inner width, for the kernels' shape limits. Returns (z, state after the last token).
    """
    if form in ("triton", "auto"):
        form = resolve_kernel_form(form, q, token_offset.shape[0], kernel_hidden)
    if form == "triton":
        return op.kernel(q, k, v, lr, inner, ln_weight, ln_bias, token_offset, initial_state, eps)
    scan_form, max_chunk = getattr(op, form), 1 if form == "step" else None
    return run_ttt(scan_form, q, k, v, lr, inner, ln_weight, ln_bias, token_offset, initial_state, eps, max_chunk)
