"""The Nadaraya–Watson estimator as a TTT learner (paper §2.6: with a softmax kernel it is self-attention).

The "hidden state" of a nonparametric learner is its training set: at step t the learner has seen the pairs
(k_s, v_s), s ≤ t, and predicts for q_t the kernel-weighted average of the targets,

    z_t = Σ_{s≤t} κ(q_t, k_s) v_s / Σ_{s≤t} κ(q_t, k_s).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Kernel = Callable[[Tensor, Tensor], Tensor]


def exp_dot_kernel(q: Tensor, k: Tensor) -> Tensor:
    """κ(q, k) = exp(q·k / √d), the softmax-attention kernel. q: (..., Tq, d), k: (..., Tk, d) → (..., Tq, Tk).

    Each row is shifted by its maximum before exponentiating; the shift cancels in the normalised estimator.
    """
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.exp(logits - logits.amax(dim=-1, keepdim=True))


def nadaraya_watson(q: Tensor, k: Tensor, v: Tensor, kernel: Kernel = exp_dot_kernel) -> Tensor:
    """Causal Nadaraya–Watson regression of v on k, queried at q.

    q, k, v: (batch, seq, heads, d). ``kernel(q, k)`` maps (B, H, Tq, d), (B, H, Tk, d) to non-negative
    weights (B, H, Tq, Tk). Returns (batch, seq, heads, d).
    """
    if q.shape != k.shape or k.shape[:-1] != v.shape[:-1] or q.dim() != 4:
        raise ValueError(
            f"q, k must be (batch, seq, heads, d) of one shape and v (batch, seq, heads, d_v); "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    seq = q.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    weights = kernel(qh, kh).masked_fill(~causal, 0.0)
    z = (weights @ vh) / weights.sum(dim=-1, keepdim=True)
    return z.transpose(1, 2)
