"""The inner model's LayerNorm and GELU, with the derivatives the TTT inner loop needs.

The inner loop takes gradients of the reconstruction loss w.r.t. the inner weights *inside* the forward pass,
so those gradients must themselves be differentiable by autograd (the outer loop trains θK, θV, θQ, W0 and the
learning rate through them), to any order. They are few and large ATen operations where that is exact (the
dual form calls them once per mini-batch in a sequential loop): GELU and its backward kernel (which has a
double-backward formula) and the LayerNorm kernels, with hand-written derivatives for the LayerNorm backward
(``_LayerNormBackward``).

All functions act on the last dimension; leading dimensions are broadcast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dim: ``weight * (x - mean) / sqrt(var + eps) + bias`` (biased variance).

    x: (..., d); weight, bias: broadcastable to x (per-head parameters as (H, 1, d) against (B, H, n, d)).
    """
    return standardise(x, eps) * weight + bias


def standardise(x: Tensor, eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the last dim (biased variance): LayerNorm without its affine map."""
    return torch.native_layer_norm(x, x.shape[-1:], None, None, eps)[0]


def layer_norm_l2_grad(x: Tensor, target: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Gradient of ``½‖LN(x) − target‖²`` w.r.t. x, row by row.

    With x̂ = (x − μ)/σ and y = γ x̂ + β, the gradient w.r.t. x̂ is ``(y − target) γ = γ² x̂ + (β − target) γ``.

    x, target: (..., d); weight, bias: broadcastable. Returns (..., d).
    """
    return layer_norm_backward(x, weight.square(), layer_norm_l2_offset(target, weight, bias), eps)


def layer_norm_l2_offset(target: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``(β − target) γ``: the part of ``layer_norm_l2_grad``'s gradient w.r.t. x̂ that does not depend on x."""
    return (bias - target) * weight


def _row_mean(x: Tensor) -> Tensor:
    return x.mean(dim=-1, keepdim=True)


def _normalise(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(x̂, 1/σ) with x̂ = (x − μ)/σ, σ = sqrt(biased var + eps), as differentiable expressions."""
    centred = x - _row_mean(x)
    inv_std = torch.rsqrt(_row_mean(centred.square()) + eps)
    return centred * inv_std, inv_std


def _jacobian_product(a: Tensor, x_hat: Tensor, inv_std: Tensor) -> Tensor:
    """``J a`` for J = ∂x̂/∂x = (I − 11ᵀ/d − x̂ x̂ᵀ/d) / σ, the (symmetric) Jacobian of the normalisation."""
    return (a - _row_mean(a) - x_hat * _row_mean(a * x_hat)) * inv_std


def _layer_norm_backward_kernels(x: Tensor, slope: Tensor, offset: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``layer_norm_backward``'s value from ATen's LayerNorm forward and backward kernels (not differentiable),
    with the x̂ and 1/σ they computed on the way."""
    x_hat, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, eps)
    grad_x_hat = torch.addcmul(offset, slope, x_hat)
    mask = [True, False, False]  # only the input's gradient: no affine weights are given
    out = torch.ops.aten.native_layer_norm_backward(grad_x_hat, x, x.shape[-1:], mean, rstd, None, None, mask)[0]
    return out, x_hat, rstd


class _LayerNormBackward(torch.autograd.Function):
    """F(x, slope, offset) = J (slope ⊙ x̂ + offset): values from ATen's LayerNorm kernels, derivatives by hand.

    ATen's derivative of its own LayerNorm backward treats the saved mean and 1/σ as constants: right for the
    first derivative, wrong for the next, which an outer loop differentiating through the inner gradients twice
    takes (``gradgradcheck``). The backward below is written in differentiable operations of the saved inputs,
    so autograd differentiates it to any order. With u the incoming gradient, w = J u, ĝ = slope x̂ + offset:

        ∂/∂offset = w,   ∂/∂slope = x̂ ⊙ w,
        ∂/∂x = J (slope ⊙ w) − (1/σ) [ (x̂/σ) (mean(u ĝ) − mean(u) mean(ĝ) − mean(u x̂) mean(ĝ x̂))
                                        + mean(u x̂) F + mean(ĝ x̂) w ]

    (the second term is the derivative of ⟨u, J(x) ĝ⟩ at fixed ĝ; from ∂(1/σ)/∂x = −x̂ / (d σ²)).
    """

    @staticmethod
    def forward(ctx, x: Tensor, slope: Tensor, offset: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        out, x_hat, inv_std = _layer_norm_backward_kernels(x, slope, offset, eps)
        ctx.eps = eps
        ctx.save_for_backward(x, slope, offset, out, x_hat, inv_std)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, slope, offset, out, x_hat, inv_std = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: x̂ and 1/σ as functions of x, for the next derivative
            x_hat, inv_std = _normalise(x, ctx.eps)
        w = _jacobian_product(grad, x_hat, inv_std)
        grad_x = None
        if ctx.needs_input_grad[0]:
            g_hat = torch.addcmul(offset, slope, x_hat)
            mean_ux, mean_gx = _row_mean(grad * x_hat), _row_mean(g_hat * x_hat)
            centred_ug = _row_mean(grad * g_hat) - _row_mean(grad) * _row_mean(g_hat)
            curvature = x_hat * inv_std * (centred_ug - mean_ux * mean_gx) + mean_ux * out + mean_gx * w
            grad_x = _jacobian_product(slope * w, x_hat, inv_std) - inv_std * curvature
        grad_slope = (x_hat * w).sum_to_size(slope.shape) if ctx.needs_input_grad[1] else None
        grad_offset = w.sum_to_size(offset.shape) if ctx.needs_input_grad[2] else None
        return grad_x, grad_slope, grad_offset, None


def layer_norm_backward(x: Tensor, slope: Tensor, offset: Tensor, eps: float) -> Tensor:
    """Gradient w.r.t. x of a loss whose gradient w.r.t. the normalised x̂ = (x − μ)/σ is ``slope x̂ + offset``.

    The LayerNorm backward ``(ĝ − mean(ĝ) − x̂ mean(ĝ x̂)) / σ``, ĝ being the gradient w.r.t. x̂, in ATen's
    LayerNorm kernels: three operations instead of about fifteen, as it sits in the dual form's sequential loop
    over mini-batches; differentiable to any order (``_LayerNormBackward``). ``slope`` and ``offset`` separate
    what depends on x from what does not, so a caller can compute the offset for many rows at once, ahead of a
    loop.

    x: (..., d); slope, offset: broadcastable to x. Returns (..., d).
    """
    if torch.is_grad_enabled() and (x.requires_grad or slope.requires_grad or offset.requires_grad):
        return _LayerNormBackward.apply(x, slope, offset, eps)
    return _layer_norm_backward_kernels(x, slope, offset, eps)[0]  # the same kernels without the Function's overhead


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands on the incoming gradient in contiguous memory.

    ATen's GELU backward kernels run about 10x slower when an operand is a transposed view (the elementwise loop is
    not vectorised across mixed layouts), and the gradients reaching the inner MLP's activations are often
    transposed: the backward of ``bmm(a, bᵀ)`` gives b's gradient as a transposed product (TTT-MLP's hidden
    activations of the keys, in the dual form: about 8% of its forward + backward at 125m, T = 2048). One copy of the
    gradient before the GELU backward costs far less than the slow kernel. The backward is itself a differentiable
    copy, so derivatives of any order pass through.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _ContiguousGrad.apply(grad.contiguous())


def contiguous_grad(x: Tensor) -> Tensor:
    """``x``, with its gradient made contiguous on the way back (``_ContiguousGrad``); ``x`` itself without autograd."""
    return _ContiguousGrad.apply(x) if torch.is_grad_enabled() and x.requires_grad else x


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation (the activation of the TTT-MLP inner model)."""
    return contiguous_grad(F.gelu(x, approximate="tanh"))


def gelu_tanh_backward(grad: Tensor, x: Tensor) -> Tensor:
    """``grad ⊙ gelu_tanh'(x)`` in one ATen kernel (differentiable: it has a double-backward formula)."""
    return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")


def gelu_tanh_grad(x: Tensor) -> Tensor:
    """d gelu_tanh(x) / dx, elementwise."""
    return gelu_tanh_backward(torch.ones_like(x), x)
