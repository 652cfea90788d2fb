"""TTT-MLP: the hidden state is a two-layer MLP ``g(x) = gelu(x W1 + b1) W2 + b2`` per head.

``ttt_mlp(..., form=...)`` has the forms of ``tttlm.ops.ttt_linear`` ("primal", "dual", "step", "triton",
"auto"); like it, it validates its arguments and calls ``run_form`` with ``FORMS``.
"""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.checks import check_ttt_inputs
from tttlm.ops.forms import OpForms, canonical_form, run_form
from tttlm.ops.kernel_forms import KernelForm
from tttlm.ops.scan import ScanForm
from tttlm.ops.state import TTTState
from tttlm.ops.ttt_mlp.dual import dual_chunk, dual_mlp_span
from tttlm.ops.ttt_mlp.primal import primal_chunk
from tttlm.ops.ttt_mlp.step import step_chunk

FORMS = OpForms(
    primal=ScanForm(primal_chunk),
    dual=ScanForm(dual_chunk, dual_mlp_span),
    step=ScanForm(step_chunk),
    kernel=KernelForm("tttlm.ops.ttt_mlp.triton", "triton_mlp"),  # imports triton on first call only
)


def ttt_mlp(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    weight1: Tensor,
    bias1: Tensor,
    weight2: Tensor,
    bias2: Tensor,
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
    """Mini-batch TTT with a two-layer MLP inner model.

    The update rule, the step sizes and every argument not listed here are those of
    ``tttlm.ops.ttt_linear.ttt_linear``.

    Args:
        weight1: (heads, d, hidden) and bias1: (heads, hidden), the first inner layer's initial weights.
        weight2: (heads, hidden, d) and bias2: (heads, d), the second's.

    Returns:
        z: (batch, seq, heads, d); the ``TTTState`` with weights (W1, b1, W2, b2) after the last token.
    """
    required = {"weight1": weight1, "bias1": bias1, "weight2": weight2, "bias2": bias2}
    for name, tensor in required.items():
        if tensor is None:
            raise TypeError(f"{name} must be a torch.Tensor; got None (the TTT-MLP inner model needs all four)")

    def inner_params(heads: int, d: int) -> dict[str, tuple[Tensor, tuple[int, ...]]]:
        hidden = weight1.shape[-1] if isinstance(weight1, Tensor) and weight1.dim() == 3 else 4 * d
        shapes = ((heads, d, hidden), (heads, hidden), (heads, hidden, d), (heads, d))
        return {name: (tensor, shape) for (name, tensor), shape in zip(required.items(), shapes, strict=True)}

    form = canonical_form(form)
    check_ttt_inputs(
        q,
        k,
        v,
        lr,
        inner_params,
        ln_weight=ln_weight,
        ln_bias=ln_bias,
        token_offset=token_offset,
        mini_batch_size=mini_batch_size,
        initial_state=initial_state,
        check_finite=check_finite,
    )
    inner = (weight1, bias1, weight2, bias2)
    offsets = q.new_zeros(mini_batch_size) if token_offset is None else token_offset
    hidden = weight1.shape[-1]
    return run_form(FORMS, form, q, k, v, lr, inner, ln_weight, ln_bias, offsets, initial_state, eps, hidden)


__all__ = ["FORMS", "TTTState", "ttt_mlp"]
