"""TTT-MLP, primal form: the readable reference.

Inner model per head ``g(x) = gelu(x W1 + b1) W2 + b2`` (W1: d×h, W2: h×d, h = 4d in the paper, tanh GELU),
``f(x) = x + LN(g(x))``, loss ``ℓ(W; j) = ½‖f(k_j) − v_j‖²``. The MLP is two linear layers, each updated
exactly like TTT-Linear's; only the gradients reaching them (back-propagated through GELU at W_s) and the
query-side input of the second layer (the query's own hidden activation under W1_i) differ.
"""

from __future__ import annotations

from torch import Tensor

from tttlm.ops.inner_norm import gelu_tanh, gelu_tanh_backward
from tttlm.ops.scan import ChunkFn, Norm, Weights, close_or_pend, reconstruction_grad
from tttlm.ops.ttt_linear.primal import LinearLayerFn, affine, primal_linear_layer


def key_side_grads(k: Tensor, v: Tensor, weights: Weights, norm: Norm, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Forward the keys through the inner MLP at W_s and back-propagate the reconstruction loss.

    k, v: (B, H, n, d). Returns the hidden activations x2 = gelu(k W1 + b1) (B, H, n, h), ∂ℓ/∂(k W1 + b1)
    (B, H, n, h) and ∂ℓ/∂g(k) (B, H, n, d).
    """
    W1, b1, W2, b2 = weights
    z1 = affine(k, W1, b1)
    x2 = gelu_tanh(z1)
    grad_z2 = reconstruction_grad(affine(x2, W2, b2), k, v, norm, eps)
    grad_z1 = gelu_tanh_backward(grad_z2 @ W2.transpose(-1, -2), z1)
    return x2, grad_z1, grad_z2


def mlp_chunk(layer: LinearLayerFn) -> ChunkFn:
    """The TTT-MLP chunk function whose two inner layers are each read by ``layer`` (primal, dual or step).

    Same contract as ``tttlm.ops.ttt_linear.primal.linear_chunk``; weights = (W1, b1, W2, b2).
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
        W1, b1, W2, b2 = weights
        x2, grad_z1, grad_z2 = key_side_grads(k, v, weights, norm, eps)
        zq1, sums1 = layer(q, k, grad_z1, lr, scale, W1, b1, None if pending is None else pending[:2])
        zq, sums2 = layer(gelu_tanh(zq1), x2, grad_z2, lr, scale, W2, b2, None if pending is None else pending[2:])
        return zq, *close_or_pend(weights, sums1 + sums2, scale[-1], close)

    return chunk


primal_chunk = mlp_chunk(primal_linear_layer)
