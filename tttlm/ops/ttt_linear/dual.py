"""TTT-Linear, dual form (paper §2.6): every output of a mini-batch from matrix products only.

With G = ∂ℓ/∂z at W_s for the n tokens of the chunk (n × d) and the step sizes η[i, j] = scale_i lr_j,

    z_i = q_i W_s + b_s − scale_i (q_i S_W + S_b) − Σ_{j≤i} η[i, j] (q_i·k_j + 1) G_j,

i.e. ``Z = Q W_s + b_s − (η ⊙ tril(Q Kᵀ + 1)) G`` (S: sums pending from earlier in the mini-batch); the
per-token states W_i are never formed. The sums grow by ``Kᵀ (lr ⊙ G)`` and ``Σ lr ⊙ G``.
"""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.scan import Weights
from tttlm.ops.ttt_linear.naive import affine, linear_chunk


def dual_linear_layer(
    x_q: Tensor,
    x_k: Tensor,
    grad: Tensor,
    lr: Tensor,
    scale: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    pending: Weights | None,
) -> tuple[Tensor, Weights]:
    """Same contract as ``naive.primal_linear_layer``; O(n² d + n d²) per (batch, head), no W_i formed."""
    attn = x_q @ x_k.transpose(-1, -2)
    if bias is not None:
        attn = attn + 1.0
    eta = (scale[:, None] * attn * lr.unsqueeze(-2)).tril()
    out = affine(x_q, weight, bias) - eta @ grad
    lr_grad = lr.unsqueeze(-1) * grad
    sums = [x_k.transpose(-1, -2) @ lr_grad]
    if bias is not None:
        sums.append(lr_grad.sum(dim=2, keepdim=True))
    if pending is not None:
        out = out - scale[:, None] * affine(x_q, *pending)
        sums = [s + p for s, p in zip(sums, pending, strict=True)]
    return out, tuple(sums)


dual_chunk = linear_chunk(dual_linear_layer)
