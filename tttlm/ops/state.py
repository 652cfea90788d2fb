"""The state a TTT op carries between calls: the inner model plus the open mini-batch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class TTTState(NamedTuple):
    """Inner-model state after some prefix of a sequence.

    Attributes:
        weights: the inner model W_s at the start of the open mini-batch, one tensor per inner parameter,
            each ``(batch, heads, *shape)``; biases are stored as ``(batch, heads, 1, dim)``.
        grad_sums: ``Σ_j lr_j ∇ℓ(W_s; j)`` over the tokens already read in the open mini-batch, the same
            shapes as ``weights``; all zeros when ``position == 0``.
        position: how many tokens of the open mini-batch have been read, ``0 <= position < mini_batch_size``.

    Because the step size factorises as ``η[i, j] = scale_i · lr_j``, ``(W_s, grad_sums, position)`` is all
    that is needed to continue a sequence exactly, whatever the split point.
    """

    weights: tuple[Tensor, ...]
    grad_sums: tuple[Tensor, ...]
    position: int

    @classmethod
    def initial(cls, params: tuple[Tensor, ...], batch_size: int) -> TTTState:
        """The state before the first token, from learnable initial weights shaped ``(heads, *shape)``.

        Vectors ``(heads, dim)`` (biases) become ``(batch, heads, 1, dim)``. Expanded, not copied, so the
        outer-loop gradient flows back into ``params``.
        """
        weights = tuple(
            (p.unsqueeze(-2) if p.dim() == 2 else p).unsqueeze(0).expand(batch_size, *p.shape[:1], -1, -1)
            for p in params
        )
        return cls(weights, tuple(torch.zeros_like(w) for w in weights), 0)

    def detach(self) -> TTTState:
        """The same state cut from the autograd graph (e.g. between truncated-BPTT segments)."""
        return TTTState(
            tuple(w.detach() for w in self.weights), tuple(g.detach() for g in self.grad_sums), self.position
        )
