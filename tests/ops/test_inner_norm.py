"""The inner model's LayerNorm / GELU and their hand-written derivatives against torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ttt_testing import assert_close

from tttlm.ops.inner_norm import gelu_tanh, gelu_tanh_grad, layer_norm, layer_norm_l2_grad


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("d", [2, 5, 16])
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_layer_norm_matches_torch(d: int, eps: float) -> None:
    x = _rand(3, 4, d, seed=d, scale=2.0) + 0.5
    weight, bias = 1.0 + _rand(d, seed=1, scale=0.3), _rand(d, seed=2, scale=0.3)
    assert_close(layer_norm(x, weight, bias, eps), F.layer_norm(x, (d,), weight, bias, eps))


def test_layer_norm_broadcasts_per_head_params() -> None:
    """Per-head params (H, 1, d) against x (B, H, n, d), as the ops use them."""
    batch, heads, n, d, eps = 2, 3, 4, 5, 1e-6
    x = _rand(batch, heads, n, d, seed=3)
    weight, bias = 1.0 + _rand(heads, d, seed=4, scale=0.3), _rand(heads, d, seed=5, scale=0.3)
    out = layer_norm(x, weight[:, None], bias[:, None], eps)
    for h in range(heads):
        assert_close(out[:, h], F.layer_norm(x[:, h], (d,), weight[h], bias[h], eps))


@pytest.mark.parametrize("d", [2, 5, 16])
@pytest.mark.parametrize("eps", [1e-6, 1e-1])
def test_layer_norm_l2_grad_matches_autograd(d: int, eps: float) -> None:
    x = (_rand(3, 4, d, seed=d, scale=1.5) + 0.3).requires_grad_(True)
    target = _rand(3, 4, d, seed=d + 1)
    weight, bias = 1.0 + _rand(d, seed=7, scale=0.3), _rand(d, seed=8, scale=0.3)
    loss = 0.5 * (F.layer_norm(x, (d,), weight, bias, eps) - target).pow(2).sum()
    (expected,) = torch.autograd.grad(loss, x)
    assert_close(layer_norm_l2_grad(x.detach(), target, weight, bias, eps), expected)


def test_layer_norm_l2_grad_broadcasts_per_head_params() -> None:
    batch, heads, n, d, eps = 2, 3, 4, 6, 1e-6
    x = _rand(batch, heads, n, d, seed=9).requires_grad_(True)
    target = _rand(batch, heads, n, d, seed=10)
    weight, bias = 1.0 + _rand(heads, 1, d, seed=11, scale=0.3), _rand(heads, 1, d, seed=12, scale=0.3)
    loss = 0.5 * (layer_norm(x, weight, bias, eps) - target).pow(2).sum()
    (expected,) = torch.autograd.grad(loss, x)
    assert_close(layer_norm_l2_grad(x.detach(), target, weight, bias, eps), expected)


def test_layer_norm_l2_grad_is_differentiable() -> None:
    """The inner gradient is itself differentiated by the outer loop: its derivatives must be right."""
    d = 4
    x = _rand(2, d, seed=13).requires_grad_(True)
    target = _rand(2, d, seed=14).requires_grad_(True)
    weight = (1.0 + _rand(d, seed=15, scale=0.3)).requires_grad_(True)
    bias = _rand(d, seed=16, scale=0.3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *a: layer_norm_l2_grad(*a, 1e-6), (x, target, weight, bias))


def test_gelu_tanh_matches_torch() -> None:
    x = torch.cat([torch.linspace(-8, 8, 401, dtype=torch.float64), _rand(100, seed=17, scale=3.0)])
    assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"))


def test_gelu_tanh_is_not_exact_gelu() -> None:
    """Pin the tanh approximation (the exact erf GELU differs by ~1e-4 here)."""
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert (gelu_tanh(x) - F.gelu(x)).abs().max() > 1e-5


def test_gelu_tanh_grad_matches_autograd() -> None:
    x = torch.cat([torch.linspace(-8, 8, 401, dtype=torch.float64), _rand(100, seed=18, scale=3.0)])
    x = x.requires_grad_(True)
    (expected,) = torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)
    assert_close(gelu_tanh_grad(x.detach()), expected)


def test_gelu_tanh_grad_is_differentiable() -> None:
    x = _rand(7, seed=19, scale=2.0).requires_grad_(True)
    assert torch.autograd.gradcheck(gelu_tanh_grad, (x,))


def test_gelu_hands_a_contiguous_gradient_back() -> None:
    """The GELU backward gets a contiguous gradient even where the product after it gives a transposed one (the
    kernel is ~10x slower on transposed operands); values and derivatives of any order are unchanged."""
    from tttlm.ops.inner_norm import contiguous_grad

    other = torch.randn(3, 6, 5, dtype=torch.float64)
    for wrap, contiguous in ((lambda t: t, False), (contiguous_grad, True)):
        x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
        seen = []
        x.register_hook(lambda g, seen=seen: seen.append(g.is_contiguous()))
        (other @ wrap(x).transpose(-1, -2)).sum().backward()  # x's gradient comes from a transposed product
        assert seen == [contiguous]
        torch.testing.assert_close(x.grad, other.sum(1, keepdim=True).expand(3, 4, 5), rtol=0, atol=1e-14)
    z = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: other @ gelu_tanh(t).transpose(-1, -2), (z,))
