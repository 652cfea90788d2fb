"""The pieces of the TTT-E2E inner loop as plain functions: the fast-weight SwiGLU, the inner and outer losses, the
SGD step.

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


def log_probabilities(logits: Tensor) -> Tensor:
    """(…, vocab) log-softmax over the vocabulary, half-precision logits upcast to float32 (float64 stays)."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return F.log_softmax(logits, dim=-1)


def token_nll(log_probs: Tensor, targets: Tensor, ignore_id: int = -100) -> Tensor:
    """(B, n) −log p(target) of each position, exactly 0 where the target is ``ignore_id`` (not 0 × a possibly
    infinite loss). log_probs: (B, n, vocab); targets: (B, n)."""
    nll = F.nll_loss(log_probs.flatten(0, 1), targets.flatten(), ignore_index=ignore_id, reduction="none")
    return nll.view(targets.shape)


def inner_loss(log_probs: Tensor, targets: Tensor, ignore_id: int | None = None) -> Tensor:
    """Sum over sequences of each sequence's mean next-token cross-entropy over its counted positions.

    Summing (not averaging) over the batch makes the gradient with respect to a sequence's own fast weights that
    sequence's own mean-loss gradient, whatever the batch size. A position whose target is ``ignore_id`` is not
    counted (the release's loss mask, target ≠ BOS); a sequence with no counted position contributes 0, as the
    release's ``cross_entropy_loss_and_accuracy`` (whose count is floored at 1e-10).

    Args:
        log_probs: (B, n, vocab) log-probabilities of the mini-batch's positions (``log_probabilities``).
        targets: (B, n) the token that follows each position.
        ignore_id: the target id left out (None: every position counts).
    """
    if ignore_id is None:
        return token_nll(log_probs, targets).mean(1).sum()
    counts = (targets != ignore_id).sum(dim=1).clamp_min(1)
    return (token_nll(log_probs, targets, ignore_id).sum(dim=1) / counts).sum()


def outer_loss(sums: Tensor, counts: Tensor, reduction: str, num_items: int | Tensor | None = None) -> Tensor:
    """The outer (meta) loss from each (sequence, stream mini-batch)'s summed NLL and count of scored tokens.

    Args:
        sums: (B, G) per sequence and mini-batch of the call, the NLL summed over its counted positions.
        counts: (B, G) how many positions each counted.
        reduction: "mini_batch" (the release's): the mean, over the pairs with a counted position, of each pair's
            mean; "token": the mean over all counted tokens.
        num_items: under gradient accumulation, the sum over all tokens is divided by it instead (the
            transformers convention), whatever ``reduction``.
    """
    if num_items is not None:
        return sums.sum() / num_items
    if reduction == "token":
        return sums.sum() / counts.sum()
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def mini_batch_nll(logits: Tensor, labels: Tensor, mini_batch_size: int, start: int = 0) -> tuple[Tensor, Tensor]:
    """``outer_loss``'s sums and counts (B, G) of a whole call's logits: the path of calls that run row by row
    (padded batches); every other call scores each mini-batch inside its inner step instead.

    Args:
        logits: (B, T, vocab); position t is scored against ``labels[:, t + 1]`` (the transformers shift).
        labels: (B, T) target ids; -100 is not counted (the caller sets BOS targets to it: the release's mask).
        mini_batch_size: b; position t belongs to mini-batch ``(start + t) // b`` of the stream.
        start: the stream position of the call's first token.
    """
    targets = shifted_targets(labels).to(logits.device)
    nll = token_nll(log_probabilities(logits), targets)
    return per_mini_batch(nll, start, mini_batch_size).sum(-1), per_mini_batch(
        targets != -100, start, mini_batch_size
    ).sum(-1)


def per_mini_batch(values: Tensor, start: int, mini_batch_size: int) -> Tensor:
    """(B, T) → (B, G, b): the values of each stream mini-batch the call touches, zero-padded at its ends.

    Position t of the call belongs to mini-batch ``(start + t) // b`` of the stream (``start``: the stream position
    of the call's first token); G counts the mini-batches from the first position's to the last's.
    """
    batch, seq = values.shape
    offset = start % mini_batch_size
    groups = -(-(offset + seq) // mini_batch_size)
    padded = F.pad(values, (offset, groups * mini_batch_size - offset - seq))
    return padded.view(batch, groups, mini_batch_size)


def shifted_targets(labels: Tensor) -> Tensor:
    """(B, T) the target of each position: ``labels[:, t + 1]``, -100 (not counted) after the last."""
    return F.pad(labels, (0, 1), value=-100)[:, 1:]


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
