"""The Nadaraya–Watson estimator as a TTT learner (paper §2.6: with a softmax kernel it is self-attention).

The "hidden state" of a nonparametric learner is its training set: at step t the learner has seen the pairs
(k_s, v_s), s ≤ t, and predicts for q_t the kernel-weighted average of the targets,

    z_t = Σ_{s≤t} κ(q_t, k_s) v_s / Σ_{s≤t} κ(q_t, k_s).

Kernels are given by their logarithm, so the weights of each row can be rescaled by the largest *visible*
one before exponentiating (the rescaling cancels in the ratio; without it large logits underflow to 0/0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

LogKernel = Callable[[Tensor, Tensor], Tensor]


def dot_product_log_kernel(q: Tensor, k: Tensor) -> Tensor:
    """log κ(q, k) = q·k / √d: the softmax-attention kernel. q: (..., Tq, d), k: (..., Tk, d) → (..., Tq, Tk)."""
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


def nadaraya_watson(q: Tensor, k: Tensor, v: Tensor, log_kernel: LogKernel = dot_product_log_kernel) -> Tensor:
    """Causal Nadaraya–Watson regression of v on k, queried at q.

    q, k: (batch, seq, heads, d); v: (batch, seq, heads, d_v). ``log_kernel(q, k)`` maps (B, H, Tq, d) and
    (B, H, Tk, d) to log κ (B, H, Tq, Tk). Returns (batch, seq, heads, d_v).
    """
    if q.dim() != 4 or q.shape != k.shape or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"q, k must be (batch, seq, heads, d) of one shape and v (batch, seq, heads, d_v); "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    seq = q.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    log_weights = log_kernel(qh, kh).masked_fill(~causal, -math.inf)
    weights = torch.exp(log_weights - log_weights.amax(dim=-1, keepdim=True))
    z = (weights @ vh) / weights.sum(dim=-1, keepdim=True)
    return z.transpose(1, 2)
