"""TTT-Linear: the hidden state is a linear model ``g(x) = x W + b`` per head, trained on the sequence.

``ttt_linear(..., form=...)`` runs the same maths in several forms with one signature:

- ``"naive"``: primal mini-batch form, every per-token W_i materialised (readable reference, slow);
- ``"dual"``: matmul-only dual form (default; training and prefill);
- ``"step"``: token by token through the O(1) decode step;
- ``"triton"``: fused GPU kernels (``triton.py``; CUDA, or CPU under ``TRITON_INTERPRET=1``), else an error;
- ``"auto"``: ``"triton"`` on CUDA tensors when triton is installed and the shapes are supported, else ``"dual"``.
"""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.checks import check_ttt_inputs
from tttlm.ops.kernel_forms import KernelForm, resolve_kernel_form
from tttlm.ops.scan import ScanForm, run_ttt
from tttlm.ops.state import TTTState
from tttlm.ops.ttt_linear.dual import dual_chunk, dual_linear_span
from tttlm.ops.ttt_linear.primal import primal_chunk
from tttlm.ops.ttt_linear.step import step_chunk

_TRITON = KernelForm("tttlm.ops.ttt_linear.triton", "triton_linear")  # imports triton on first call only
FORMS: dict[str, ScanForm | KernelForm] = {
    "naive": ScanForm(primal_chunk),
    "dual": ScanForm(dual_chunk, dual_linear_span),
    "step": ScanForm(step_chunk),
    "triton": _TRITON,
    "auto": _TRITON,
}


def ttt_linear(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    token_offset: Tensor | None = None,
    *,
    mini_batch_size: int = 16,
    initial_state: TTTState | None = None,
    form: str = "dual",
    eps: float = 1e-6,
    check_finite: bool = False,
) -> tuple[Tensor, TTTState]:
    """Mini-batch TTT with a linear inner model.

    For every token j: ``ℓ(W; j) = ½‖f(k_j; W) − v_j‖²`` with ``f(x) = x + LN(x W + b)``; token i of a
    mini-batch starting at s outputs ``f(q_i; W_i)``, ``W_i = W_s − max(1/i + δ_i, 0) Σ_{s≤j≤i} lr_j ∇ℓ(W_s; j)``.

    Args:
        q, k, v: (batch, seq, heads, d) queries, keys (the "corrupted" input) and values (the target).
        lr: (batch, seq, heads) per-token inner learning rate lr_j (already including base lr and 1/d).
        weight: (heads, d, d) initial inner weight W0 (used when ``initial_state`` is None).
        bias: (heads, d) initial inner bias, or None for a bias-free inner model.
        ln_weight, ln_bias: (heads, d) inner LayerNorm; both None for the plain learner ``f(x) = x W + b``
            (no norm, no residual: the linear-attention special case).
        token_offset: (mini_batch_size,) learnable per-position offsets δ; None means zeros.
        mini_batch_size: TTT mini-batch size b >= 1 (b = 1 is online gradient descent).
        initial_state: continue from a state returned by an earlier call (prefill in pieces, decoding).
        form: "naive", "dual", "step", "triton" or "auto" — the same function computed differently.
        eps: LayerNorm epsilon.
        check_finite: also reject NaN/Inf inputs (costs a pass over the data).

    Returns:
        z: (batch, seq, heads, d) outputs ``f(q_i; W_i)``; and the ``TTTState`` after the last token.
    """
    check_ttt_inputs(
        q,
        k,
        v,
        lr,
        lambda heads, d: {"weight": (weight, (heads, d, d)), "bias": (bias, (heads, d))},
        ln_weight,
        ln_bias,
        token_offset,
        mini_batch_size,
        initial_state,
        form,
        FORMS,
        check_finite,
    )
    inner = (weight,) if bias is None else (weight, bias)
    if isinstance(FORMS[form], KernelForm):
        form = resolve_kernel_form(form, q, mini_batch_size)
        if form == "triton":
            return _TRITON(q, k, v, lr, inner, ln_weight, ln_bias, token_offset, mini_batch_size, initial_state, eps)
    return run_ttt(
        FORMS[form],
        q,
        k,
        v,
        lr,
        inner,
        ln_weight,
        ln_bias,
        token_offset,
        mini_batch_size,
        initial_state,
        eps,
        max_chunk=1 if form == "step" else None,
    )


__all__ = ["FORMS", "TTTState", "ttt_linear"]
