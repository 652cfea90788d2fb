"""RoPE: the complex-multiply form of the interleaved pairing against the rotation written out."""

from __future__ import annotations

import pytest
import torch

from tttlm.layers.rope import apply_rope, apply_rope_half, rope_angles


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotation of pairs (x[2i], x[2i+1]) as the reference implementations write it."""
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def angles(seq: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return rope_angles(torch.arange(seq) % 5, dim, 10000.0)


def test_interleaved_equals_the_rotation_in_float64() -> None:
    x = torch.randn(2, 7, 3, 8, dtype=torch.float64)
    cos, sin = angles(7, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin), rotate_pairs(x, cos, sin), rtol=0, atol=1e-14)


@pytest.mark.parametrize("layout", ["transposed", "odd-offset"])
def test_interleaved_accepts_views_the_complex_view_refuses(layout: str) -> None:
    base = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    # (batch, heads, seq, d) seen as (batch, seq, heads, d); or a slice starting at an odd offset
    x = base[..., :8].transpose(1, 2) if layout == "transposed" else base[..., 1:].transpose(1, 2)
    cos, sin = angles(7, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin), rotate_pairs(x, cos, sin), rtol=0, atol=1e-14)


def test_interleaved_gradient_is_the_inverse_rotation() -> None:
    x = torch.randn(1, 6, 2, 4, dtype=torch.float64, requires_grad=True)
    cos, sin = angles(6, 4)
    grad = torch.randn(1, 6, 2, 4, dtype=torch.float64)
    (apply_rope(x, cos, sin) * grad).sum().backward()
    # a rotation's adjoint is the rotation by the opposite angle
    torch.testing.assert_close(x.grad, rotate_pairs(grad, cos, -sin), rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, cos, sin), (x.detach().requires_grad_(),))


def test_bfloat16_takes_the_real_form() -> None:
    x = torch.randn(1, 5, 2, 6).to(torch.bfloat16)
    cos, sin = angles(5, 6)
    out = apply_rope(x, cos, sin)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, rotate_pairs(x, cos, sin), rtol=0, atol=0)


def test_half_pairing_rotates_channel_c_with_c_plus_half() -> None:
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64)
    cos, sin = angles(5, 8)
    # moving channel c + d/2 next to channel c turns the half pairing into the interleaved one
    order = torch.arange(8).view(2, 4).t().flatten()
    torch.testing.assert_close(apply_rope_half(x, cos, sin)[..., order], rotate_pairs(x[..., order], cos, sin))
