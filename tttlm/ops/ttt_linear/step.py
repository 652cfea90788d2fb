"""TTT-Linear, one token at a time: the O(1)-per-token decode step.

Carries W_s and the pending sum ``S = Σ_j lr_j ∇ℓ(W_s; j)`` of the open mini-batch; the token at mini-batch
position i reads ``W_i = W_s − scale_i S`` and, at the last position, W_i becomes the next W_s.
"""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.scan import Weights
from tttlm.ops.ttt_linear.primal import affine, linear_chunk


def step_linear_layer(
    x_q: Tensor,
    x_k: Tensor,
    grad: Tensor,
    lr: Tensor,
    scale: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    pending: Weights | None,
) -> tuple[Tensor, Weights]:
    """``naive.primal_linear_layer`` for one token (n = 1): add its gradient to the sums, read ``W_s − scale S``."""
    lr_grad = lr.unsqueeze(-1) * grad  # (B, H, 1, d_out)
    grads = (x_k.transpose(-1, -2) @ lr_grad,) + (() if bias is None else (lr_grad,))
    sums = grads if pending is None else tuple(p + g for p, g in zip(pending, grads, strict=True))
    current = tuple(w - scale * s for w, s in zip((weight, bias), sums, strict=False))
    return affine(x_q, *current), sums


step_chunk = linear_chunk(step_linear_layer)
