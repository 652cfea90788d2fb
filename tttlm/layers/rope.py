"""Rotary position embedding on interleaved pairs (x[2i], x[2i+1]) rotated by angle p · θ^(−2i/d).

This is the pairing of the TTT reference implementations (JAX and PyTorch), so their checkpoints load
without permuting weights. TTT layers pass positions modulo the mini-batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_angles(positions: Tensor, dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotation angles. positions: (T,) integers → two (T, dim // 2) tensors (float32+)."""
    if dim % 2:
        raise ValueError(f"rotary embedding needs an even head dim; got {dim}")
    inv_freq = theta ** -(torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x: (batch, seq, heads, dim) by angles cos, sin: (seq, dim // 2)."""
    pairs = x.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos = cos.to(x.dtype)[:, None, :]
    sin = sin.to(x.dtype)[:, None, :]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
