"""TTT-MLP, one token at a time: the O(1)-per-token decode step (two ``step_linear_layer`` reads)."""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.inner_norm import gelu_tanh
from tttlm.ops.scan import Norm, Weights
from tttlm.ops.ttt_linear.step import step_linear_layer
from tttlm.ops.ttt_mlp.naive import key_side_grads


def step_chunk(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    scale: Tensor,
    weights: Weights,
    pending: Weights | None,
    close: bool,
    norm: Norm,
    eps: float,
) -> tuple[Tensor, Weights, Weights | None]:
    """Same contract as ``tttlm.ops.ttt_mlp.naive.primal_chunk`` for one token (B, H, 1, d)."""
    W1, b1, W2, b2 = weights
    x2, grad_z1, grad_z2 = key_side_grads(k, v, weights, norm, eps)
    zq1, sums1, current1 = step_linear_layer(q, k, grad_z1, lr, scale, W1, b1, None if pending is None else pending[:2])
    zq, sums2, current2 = step_linear_layer(
        gelu_tanh(zq1), x2, grad_z2, lr, scale, W2, b2, None if pending is None else pending[2:]
    )
    return (zq, current1 + current2, None) if close else (zq, weights, sums1 + sums2)
