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


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dim: ``weight * (x - mean) / sqrt(var + eps) + bias`` (biased variance).

    x: (..., d); weight, bias: broadcastable to x.
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps) * weight + bias


def layer_norm_l2_grad(x: Tensor, target: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Gradient of ``½‖LN(x) − target‖²`` w.r.t. x, row by row.

    With x̂ = (x − μ)/σ, y = γ x̂ + β and ĝ = (y − target) γ, the LayerNorm backward is
    ``(d ĝ − Σĝ − x̂ Σ(ĝ x̂)) / (d σ)``.

    x, target: (..., d); weight, bias: broadcastable. Returns (..., d).
    """
    d = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    inv_std = torch.rsqrt(x.var(dim=-1, keepdim=True, unbiased=False) + eps)
    x_hat = (x - mean) * inv_std
    grad_x_hat = (weight * x_hat + bias - target) * weight
    return (
        d * grad_x_hat - grad_x_hat.sum(dim=-1, keepdim=True) - x_hat * (grad_x_hat * x_hat).sum(dim=-1, keepdim=True)
    ) * (inv_std / d)


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation (the activation of the TTT-MLP inner model)."""
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3)))


def gelu_tanh_grad(x: Tensor) -> Tensor:
    """d gelu_tanh(x) / dx, elementwise."""
    t = torch.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x * x)
