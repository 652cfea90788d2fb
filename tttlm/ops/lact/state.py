"""``LaCTState``: what the LaCT op carries between calls (the fast weights and the open chunk)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class LaCTState(NamedTuple):
    """Fast-weight state after some prefix of a sequence.

    Attributes:
        weights: (w0, w1, w2) at the start of the open chunk: w0, w2 ``(batch, heads, hidden, d)``, w1
            ``(batch, heads, d, hidden)``.
        grad_sums: ``Σ_j lr_j ∇_W ⟨f(k_j; W), v_j⟩`` over the tokens already read in the open chunk (the update
            direction, an ascent direction of the dot product), the shapes of ``weights``.
        momentum_sum: (batch, heads) the sum of the per-token momentum over those tokens (its mean over the
            chunk is the chunk's momentum coefficient), or None for an op without momentum.
        velocity: the previous chunk's update (after momentum, before Muon), the shapes of ``weights``; zeros
            before the first update. None without momentum.
        norms: (batch, heads, rows, 1) row norms of the initial w0, w1, w2: the weight normalisation after each
            update rescales every row back to its initial norm.
        position: tokens read of the open chunk, ``0 <= position < chunk_size``.

    ``(weights, grad_sums, momentum_sum, position)`` is all a continuation needs, because every token of a chunk
    reads and differentiates the same weights.
    """

    weights: tuple[Tensor, Tensor, Tensor]
    grad_sums: tuple[Tensor, Tensor, Tensor]
    momentum_sum: Tensor | None
    velocity: tuple[Tensor, Tensor, Tensor] | None
    norms: tuple[Tensor, Tensor, Tensor]
    position: int

    @classmethod
    def initial(cls, w0: Tensor, w1: Tensor, w2: Tensor, batch_size: int, *, momentum: bool) -> LaCTState:
        """The state before the first token from initial weights ``(heads, rows, cols)``, expanded over the batch
        (not copied, so the outer-loop gradient reaches them)."""
        weights = tuple(w.unsqueeze(0).expand(batch_size, *w.shape) for w in (w0, w1, w2))
        zeros = tuple(torch.zeros_like(w) for w in weights)
        return cls(
            weights,  # type: ignore[arg-type]
            zeros,  # type: ignore[arg-type]
            weights[0].new_zeros(weights[0].shape[:2]) if momentum else None,
            zeros if momentum else None,  # type: ignore[arg-type]
            tuple(w.norm(dim=-1, keepdim=True) for w in weights),  # type: ignore[arg-type]
            0,
        )

    def detach(self) -> LaCTState:
        """The same state cut from the autograd graph."""

        def cut(ts: tuple[Tensor, ...] | None) -> tuple[Tensor, ...] | None:
            return None if ts is None else tuple(t.detach() for t in ts)

        return LaCTState(
            cut(self.weights),  # type: ignore[arg-type]
            cut(self.grad_sums),  # type: ignore[arg-type]
            None if self.momentum_sum is None else self.momentum_sum.detach(),
            cut(self.velocity),  # type: ignore[arg-type]
            cut(self.norms),  # type: ignore[arg-type]
            self.position,
        )
