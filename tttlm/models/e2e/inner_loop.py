"""The pieces of the TTT-E2E inner loop as plain functions: the fast-weight SwiGLU, the inner loss, the SGD step.

Shapes: B sequences, n tokens, d = hidden size, m = prime MLP width. Fast weights are per sequence, in the
(in, out) layout: gate and up (B, d, m), down (B, m, d). That layout makes every product ``x @ W`` and every weight
gradient ``xᵀ @ dy`` land in the weights' own layout, so the inner loop and its double backward never transpose
or copy a weight-sized tensor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

# Below this squared norm the clipping scale is 1 anyway; the floor keeps sqrt's derivative finite at 0.
_MIN_SQUARED_NORM = 1e-24


def fast_swiglu(x: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """``down(silu(gate x) ⊙ up x)`` with per-sequence weights.

    Args:
        x: (B, n, d) normalised inputs.
        weights: gate (B, d, m), up (B, d, m), down (B, m, d).

    Returns:
        (B, n, d).
    """
    gate, up, down = weights
    return torch.matmul(F.silu(torch.matmul(x, gate)) * torch.matmul(x, up), down)


def inner_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over sequences of each sequence's mean next-token cross-entropy.

    Summing (not averaging) over the batch makes the gradient with respect to a sequence's own fast weights that
    sequence's own mean-loss gradient, whatever the batch size.

    Args:
        logits: (B, n, vocab) logits of the mini-batch's positions.
        targets: (B, n) the token that follows each position.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view(targets.shape).mean(dim=1).sum()


def sgd_step(
    weights: Sequence[Tensor], grads: Sequence[Tensor], lrs: Sequence[Tensor | float], clip: float | None
) -> list[Tensor]:
    """One SGD step per sequence: ``W − lr · min(1, clip / ‖g‖) · g``.

    Args:
        weights, grads: matching lists of (B, ...) tensors (all prime weights of all updated blocks).
        lrs: one step size per tensor (a float or a scalar tensor, e.g. ``exp(log_lr)``).
        clip: maximum global norm of each sequence's gradient over all tensors, or None.

    Differentiable in everything, so the outer loop can back-propagate through it. The step is one ``addcmul`` per
    tensor with a (B, 1, …) factor ``lr · scale``: no weight-sized temporaries besides the result (on the CPU each
    fresh weight-sized buffer costs page faults comparable to the arithmetic).
    """
    batch = grads[0].shape[0]
    scale = grads[0].new_ones(batch)
    if clip is not None:
        squared = sum(torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))).square() for g in grads)
        scale = (clip / squared.clamp_min(_MIN_SQUARED_NORM).sqrt()).clamp(max=1.0)
    return [
        torch.addcmul(w, g, (lr * scale).view(-1, *([1] * (g.dim() - 1))), value=-1.0)
        for w, lr, g in zip(weights, lrs, grads, strict=True)
    ]


@contextmanager
def inner_grad_mode() -> Iterator[None]:
    """Autograd on for the inner gradient even when the caller runs under ``no_grad`` or ``inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_ready(tensor: Tensor) -> Tensor:
    """``tensor``, or a normal copy of it if it was created under ``inference_mode`` (those cannot enter autograd)."""
    return tensor.clone() if tensor.is_inference() else tensor
