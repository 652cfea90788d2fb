"""The inner model's LayerNorm and GELU, with the hand-written derivatives the TTT inner loop needs.

The inner loop takes gradients of the reconstruction loss w.r.t. the inner weights *inside* the forward pass,
so those gradients must themselves be differentiable by autograd (the outer loop trains θK, θV, θQ, W0 and the
learning rate through them). Writing the derivatives explicitly keeps them ordinary tensor expressions.

All functions act on the last dimension; leading dimensions are broadcast.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def _normalise(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(x̂, 1/σ) with x̂ = (x − μ)/σ, σ = sqrt(biased var + eps); the variance from the centred values
    (twice as fast as ``Tensor.var`` on the small rows of a mini-batch)."""
    centred = x - x.mean(dim=-1, keepdim=True)
    inv_std = torch.rsqrt(centred.square().mean(dim=-1, keepdim=True) + eps)
    return centred * inv_std, inv_std


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dim: ``weight * (x - mean) / sqrt(var + eps) + bias`` (biased variance).

    x: (..., d); weight, bias: broadcastable to x.
    """
    x_hat, _ = _normalise(x, eps)
    return x_hat * weight + bias


def layer_norm_l2_grad(x: Tensor, target: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Gradient of ``½‖LN(x) − target‖²`` w.r.t. x, row by row.

    With x̂ = (x − μ)/σ, y = γ x̂ + β and ĝ = (y − target) γ, the LayerNorm backward is
    ``(ĝ − mean(ĝ) − x̂ mean(ĝ x̂)) / σ``.

    x, target: (..., d); weight, bias: broadcastable. Returns (..., d).
    """
    x_hat, inv_std = _normalise(x, eps)
    grad_x_hat = (weight * x_hat + bias - target) * weight
    return (
        grad_x_hat - grad_x_hat.mean(dim=-1, keepdim=True) - x_hat * (grad_x_hat * x_hat).mean(dim=-1, keepdim=True)
    ) * inv_std


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation (the activation of the TTT-MLP inner model)."""
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3)))


def gelu_tanh_grad(x: Tensor) -> Tensor:
    """d gelu_tanh(x) / dx, elementwise."""
    t = torch.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x * x)
