"""TTT-MLP, dual form: each of the two inner layers read through ``dual_linear_layer``.

Layer 1 sees the keys/queries and the gradients ∂ℓ/∂z1; layer 2 sees the hidden activations (the keys'
at W_s, the queries' at their own W1_i) and ∂ℓ/∂z2. No per-token weights are formed.
"""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.inner_norm import gelu_tanh
from tttlm.ops.scan import Norm, Weights, close_or_pend
from tttlm.ops.ttt_linear.dual import dual_linear_layer
from tttlm.ops.ttt_mlp.naive import key_side_grads


def dual_chunk(
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
    """Same contract as ``tttlm.ops.ttt_mlp.naive.primal_chunk``."""
    W1, b1, W2, b2 = weights
    x2, grad_z1, grad_z2 = key_side_grads(k, v, weights, norm, eps)
    zq1, sums1 = dual_linear_layer(q, k, grad_z1, lr, scale, W1, b1, None if pending is None else pending[:2])
    zq, sums2 = dual_linear_layer(
        gelu_tanh(zq1), x2, grad_z2, lr, scale, W2, b2, None if pending is None else pending[2:]
    )
    return zq, *close_or_pend(weights, sums1 + sums2, scale[-1], close)
