"""TTT-Linear: the hidden state is a linear model ``g(x) = x W + b`` per head, trained on the sequence.

``ttt_linear(..., form=...)`` runs the same maths in every form of ``tttlm.ops.forms`` ("primal", "dual", "step",
"triton", "auto") with one signature; it validates its arguments and calls ``run_form`` with ``FORMS``, which the
TTT layers call directly (their inputs are valid by construction).
"""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.checks import check_ttt_inputs
from tttlm.ops.forms import OpForms, canonical_form, run_form
from tttlm.ops.kernel_forms import KernelForm
from tttlm.ops.scan import ScanForm
from tttlm.ops.state import TTTState
from tttlm.ops.ttt_linear.dual import dual_chunk, dual_linear_span
from tttlm.ops.ttt_linear.primal import primal_chunk
from tttlm.ops.ttt_linear.step import step_chunk

FORMS = OpForms(
    primal=ScanForm(primal_chunk),
    dual=ScanForm(dual_chunk, dual_linear_span),
    step=ScanForm(step_chunk),
    kernel=KernelForm("tttlm.ops.ttt_linear.triton", "triton_linear"),  # imports triton on first call only
)


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
        form: "primal" (alias "naive"), "dual", "step", "triton" or "auto" — the same function computed
            differently (``tttlm.ops.forms``).
        eps: LayerNorm epsilon.
        check_finite: also reject NaN/Inf inputs (costs a pass over the data).

    Returns:
        z: (batch, seq, heads, d) outputs ``f(q_i; W_i)``; and the ``TTTState`` after the last token.
    """
    form = canonical_form(form)
    check_ttt_inputs(
        q,
        k,
        v,
        lr,
        lambda heads, d: {"weight": (weight, (heads, d, d)), "bias": (bias, (heads, d))},
        ln_weight=ln_weight,
        ln_bias=ln_bias,
        token_offset=token_offset,
        mini_batch_size=mini_batch_size,
        initial_state=initial_state,
        check_finite=check_finite,
    )
    inner = (weight,) if bias is None else (weight, bias)
    offsets = q.new_zeros(mini_batch_size) if token_offset is None else token_offset
    return run_form(FORMS, form, q, k, v, lr, inner, ln_weight, ln_bias, offsets, initial_state, eps)


__all__ = ["FORMS", "TTTState", "ttt_linear"]
