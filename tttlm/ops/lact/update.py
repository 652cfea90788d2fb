"""The maths of LaCT's fast weight (Zhang et al. 2025, "Test-Time Training Done Right"; code:
a1600012888/LaCT ``lact_llm/lact_model/ttt_operation.py``), as pure functions per head.

Fast weight: a SwiGLU MLP per head, ``f(x; W) = w1 (silu(w0 x) ⊙ (w2 x))`` with w0, w2 (hidden, d) and w1
(d, hidden). Loss of token j: the negative dot product ``ℓ_j(W) = −⟨f(k_j; W), v_j⟩``. A chunk's update is one
gradient step with per-token, per-matrix learning rates ``lr_j = (lr0_j, lr1_j, lr2_j)``, summed (not averaged)
over the chunk::

    g_i = Σ_j lri_j ∇_{wi} ⟨f(k_j; W), v_j⟩          (i = 0, 1, 2; all tokens differentiate the same W)
    g   ← g + m · g_prev,  g_prev ← g                 momentum (optional): m = mean of the chunk's m_j
    g   ← NewtonSchulz5(g)                            Muon (optional)
    W   ← W + g
    W   ← W / (‖W‖_row + 1e-5) · ‖W_init‖_row         weight normalisation, each row to its initial norm

With a = w0 k, b = w2 k, h = silu(a) ⊙ b, u = w1ᵀ v: ``∇w1 = v hᵀ``, ``∇w2 = (u ⊙ silu(a)) kᵀ``,
``∇w0 = (u ⊙ b ⊙ silu'(a)) kᵀ`` with ``silu'(a) = σ(a)(1 + a(1 − σ(a)))``.

Tensors here: tokens (batch, seq, heads, d); weights (batch, heads, rows, cols); lr (batch, seq, heads, 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Muon's quintic Newton-Schulz coefficients per iteration, the five of the LaCT release (after modded-nanogpt)
NEWTON_SCHULZ = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NORM_EPS = 1e-5


def swiglu_apply(x: Tensor, weights: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``f(x; W)`` for x (batch, seq, heads, d) and weights (batch, heads, ·, ·). Returns (batch, seq, heads, d)."""
    w0, w1, w2 = weights
    a = torch.einsum("bhnd,bthd->bthn", w0, x)
    b = torch.einsum("bhnd,bthd->bthn", w2, x)
    return torch.einsum("bhdn,bthn->bthd", w1, F.silu(a) * b)


def silu_derivative(a: Tensor) -> Tensor:
    """d silu(a) / da = σ(a) (1 + a (1 − σ(a)))."""
    s = torch.sigmoid(a)
    return s * (1 + a * (1 - s))


def chunk_gradients(
    k: Tensor, v: Tensor, lr: Tensor, weights: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``Σ_j lri_j ∇_{wi} ⟨f(k_j; W), v_j⟩`` over the tokens of k, v (batch, seq, heads, d), lr (batch, seq,
    heads, 3), all at the same W: the whole chunk in matmuls. Returns (g0, g1, g2) shaped like the weights."""
    w0, w1, w2 = weights
    a = torch.einsum("bhnd,bthd->bthn", w0, k)
    b = torch.einsum("bhnd,bthd->bthn", w2, k)
    u = torch.einsum("bhdn,bthd->bthn", w1, v)
    silu_a = F.silu(a)
    g1 = torch.einsum("bthd,bthn->bhdn", v * lr[..., 1:2], silu_a * b)
    g0 = torch.einsum("bthn,bthd->bhnd", u * b * silu_derivative(a), k * lr[..., 0:1])
    g2 = torch.einsum("bthn,bthd->bhnd", u * silu_a, k * lr[..., 2:3])
    return g0, g1, g2


def token_gradients(
    k: Tensor, v: Tensor, lr: Tensor, weights: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """The readable reference of ``chunk_gradients`` (same signature): token by token, each gradient an outer
    product of explicit vectors, then summed."""
    w0, w1, w2 = weights
    sums = [torch.zeros_like(w) for w in weights]
    for t in range(k.shape[1]):
        kt, vt = k[:, t], v[:, t]  # (batch, heads, d)
        a = (w0 @ kt.unsqueeze(-1)).squeeze(-1)  # (batch, heads, hidden)
        b = (w2 @ kt.unsqueeze(-1)).squeeze(-1)
        hidden = F.silu(a) * b
        u = (w1.transpose(-1, -2) @ vt.unsqueeze(-1)).squeeze(-1)  # ∂⟨f, v⟩/∂(silu(a) ⊙ b)
        d_a = u * b * silu_derivative(a)  # ∂⟨f, v⟩/∂a
        d_b = u * F.silu(a)  # ∂⟨f, v⟩/∂b
        lr0, lr1, lr2 = (lr[:, t, :, i, None, None] for i in range(3))
        sums[0] = sums[0] + lr0 * d_a.unsqueeze(-1) * kt.unsqueeze(-2)
        sums[1] = sums[1] + lr1 * vt.unsqueeze(-1) * hidden.unsqueeze(-2)
        sums[2] = sums[2] + lr2 * d_b.unsqueeze(-1) * kt.unsqueeze(-2)
    return sums[0], sums[1], sums[2]


def newton_schulz(g: Tensor) -> Tensor:
    """Muon's orthogonalisation of each matrix of g (..., rows, cols): five quintic Newton-Schulz iterations on
    ``g / (‖g‖_F + 1e-7)``, in g's dtype (the release casts to bf16 first)."""
    wide = g.shape[-2] <= g.shape[-1]
    x = g if wide else g.transpose(-1, -2)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for a, b, c in NEWTON_SCHULZ:
        gram = x @ x.transpose(-1, -2)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.transpose(-1, -2)


def apply_update(
    weights: tuple[Tensor, Tensor, Tensor],
    grads: tuple[Tensor, Tensor, Tensor],
    norms: tuple[Tensor, Tensor, Tensor],
    momentum: Tensor | None,
    velocity: tuple[Tensor, Tensor, Tensor] | None,
    *,
    use_muon: bool,
    weight_norm: bool,
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor] | None]:
    """The end of a chunk: momentum, Muon, the step and the weight normalisation (module docstring).

    momentum: (batch, heads) the chunk's mean momentum coefficient, or None (then ``velocity`` is None too).
    Returns the new weights and the new velocity.
    """
    if momentum is not None:
        grads = tuple(g + momentum[..., None, None] * p for g, p in zip(grads, velocity, strict=True))
        velocity = grads
    if use_muon:
        grads = tuple(newton_schulz(g) for g in grads)
    weights = tuple(w + g for w, g in zip(weights, grads, strict=True))
    if weight_norm:
        weights = tuple(w / (w.norm(dim=-1, keepdim=True) + NORM_EPS) * n for w, n in zip(weights, norms, strict=True))
    return weights, velocity  # type: ignore[return-value]
