"""TTT-Linear, primal form: the readable reference.

Inner model ``g(x; W, b) = x W + b`` per head (row vectors, W: d×d), ``f(x) = x + LN(g(x))``, loss
``ℓ(W; j) = ½‖f(k_j) − v_j‖²``. Every per-token gradient of a mini-batch is taken at its start state W_s
and every per-token state ``W_i = W_s − scale_i Σ_{j≤i} lr_j ∇ℓ(W_s; j)`` is materialised, exactly as the
paper states the update; vectorised inside the mini-batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tttlm.ops.scan import ChunkFn, Norm, Weights, close_or_pend, reconstruction_grad

# (x_q, x_k, grad, lr, scale, weight, bias, pending) -> (outputs, gradient sums); see primal_linear_layer
LinearLayerFn = Callable[
    [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Weights | None], tuple[Tensor, Weights]
]


def affine(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x W + b`` for x (B, H, n, d_in), W (B, H, d_in, d_out), b (B, H, 1, d_out) or None."""
    y = x @ weight
    return y if bias is None else y + bias


def primal_linear_layer(
    x_q: Tensor,
    x_k: Tensor,
    grad: Tensor,
    lr: Tensor,
    scale: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    pending: Weights | None,
) -> tuple[Tensor, Weights]:
    """One linear layer of the inner model, updated by mini-batch GD with every W_i materialised.

    x_q, x_k: (B, H, n, d_in) the layer's inputs on the query and key side; grad: (B, H, n, d_out) ∂ℓ_j/∂(x_k W)
    at the mini-batch start; lr: (B, H, n); scale: (n,); pending: earlier sums of this mini-batch or None.
    Returns ``x_q,i W_i + b_i`` (B, H, n, d_out) and the lr-weighted gradient sums after the last token.
    """
    lr_grad = lr.unsqueeze(-1) * grad
    # ∇_W ℓ_j = x_jᵀ ∂ℓ_j/∂z_j; running sums over j ≤ i
    sum_W = torch.einsum("bhni,bhno->bhnio", x_k, lr_grad).cumsum(dim=2)  # (B, H, n, d_in, d_out)
    if pending is not None:
        sum_W = sum_W + pending[0].unsqueeze(2)
    W_i = weight.unsqueeze(2) - scale[:, None, None] * sum_W
    out = torch.einsum("bhni,bhnio->bhno", x_q, W_i)
    sums: Weights = (sum_W[:, :, -1],)
    if bias is not None:
        sum_b = lr_grad.cumsum(dim=2)  # (B, H, n, d_out)
        if pending is not None:
            sum_b = sum_b + pending[1]
        out = out + bias - scale[:, None] * sum_b
        sums += (sum_b[:, :, -1:],)
    return out, sums


def linear_chunk(layer: LinearLayerFn) -> ChunkFn:
    """The TTT-Linear chunk function whose one inner layer is read by ``layer`` (primal, dual or step).

    The returned function computes one run of n tokens inside a mini-batch: q, k, v (B, H, n, d), lr (B, H, n),
    scale (n,), weights (W (B, H, d, d)[, b (B, H, 1, d)]) at the mini-batch start, pending: the lr-weighted
    gradient sums of tokens read earlier in this mini-batch, or None. It returns g(q_i; W_i) (B, H, n, d), the
    weights and the pending sums after the chunk (None once the mini-batch is closed).
    """

    def chunk(
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
        weight, bias = weights[0], (weights[1] if len(weights) > 1 else None)
        grad = reconstruction_grad(affine(k, weight, bias), k, v, norm, eps)
        zq, sums = layer(q, k, grad, lr, scale, weight, bias, pending)
        return zq, *close_or_pend(weights, sums, scale[-1], close)

    return chunk


primal_chunk = linear_chunk(primal_linear_layer)
