"""The loop over mini-batches shared by every form of every TTT op.

Mini-batch TTT (paper §2.5): inside a mini-batch starting at s, every gradient is taken at W_s, and query
position i (1-based inside the mini-batch) sees ``W_i = W_s − scale_i Σ_{j≤i} lr_j ∇ℓ(W_s; j)`` with
``scale_i = max(1/i + δ_i, 0)``. The state carried to the next mini-batch is W at its last position.

A *chunk function* computes one run of tokens that stays inside one mini-batch; the forms (primal, dual,
step) differ only in how. This module cuts the sequence at mini-batch boundaries (taking into account a
mini-batch left open by an earlier call), threads the state through, and applies the inner LayerNorm +
residual to the query outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tttlm.ops.inner_norm import layer_norm, layer_norm_l2_grad
from tttlm.ops.state import TTTState

Weights = tuple[Tensor, ...]
Norm = tuple[Tensor, Tensor] | None
# (q, k, v, lr, scale, weights, pending, close, norm, eps) -> (pre-norm query outputs, weights, pending)
ChunkFn = Callable[
    [Tensor, Tensor, Tensor, Tensor, Tensor, Weights, Weights | None, bool, Norm, float],
    tuple[Tensor, Weights, Weights | None],
]


def token_scales(token_offset: Tensor) -> Tensor:
    """``max(1/i + δ_i, 0)`` for the mini-batch positions i = 1 … b. token_offset: (b,) δ. Returns (b,)."""
    i = torch.arange(1, token_offset.shape[0] + 1, dtype=token_offset.dtype, device=token_offset.device)
    return torch.clamp_min(i.reciprocal() + token_offset, 0.0)


def reconstruction_grad(zk: Tensor, k: Tensor, v: Tensor, norm: Norm, eps: float) -> Tensor:
    """∂ℓ/∂g(k) for ``ℓ = ½‖f(k) − v‖²``.

    With the inner norm, ``f(k) = k + LN(g(k))`` so the target of LN(g(k)) is ``v − k``; without it,
    ``f(k) = g(k)`` (the plain linear-attention learner). zk, k, v: (B, H, n, d).
    """
    if norm is None:
        return zk - v
    return layer_norm_l2_grad(zk, v - k, norm[0], norm[1], eps)


def close_or_pend(weights: Weights, sums: Weights, last_scale: Tensor, close: bool) -> tuple[Weights, Weights | None]:
    """End of a chunk: apply the accumulated update if the mini-batch is complete, else keep it pending."""
    if close:
        return tuple(w - last_scale * s for w, s in zip(weights, sums, strict=True)), None
    return weights, sums


def scan_minibatches(
    chunk_fn: ChunkFn,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    state: TTTState,
    token_offset: Tensor,
    mini_batch_size: int,
    norm: Norm,
    eps: float,
    max_chunk: int | None = None,
) -> tuple[Tensor, TTTState]:
    """Run ``chunk_fn`` over the sequence in mini-batch-aligned chunks.

    q, k, v: (B, H, T, d); lr: (B, H, T). ``max_chunk`` caps chunk length (1 for token-by-token decoding).
    Returns the query outputs (B, H, T, d), after the inner norm and residual when ``norm`` is given, and the
    final state.
    """
    seq = q.shape[2]
    weights = state.weights
    pending = state.grad_sums if state.position else None
    scales = token_scales(token_offset)
    # chunk lengths: first up to the end of the open mini-batch, then whole mini-batches
    sizes, position, covered = [], state.position, 0
    while covered < seq:
        sizes.append(min(seq - covered, mini_batch_size - position, max_chunk or mini_batch_size))
        position = (position + sizes[-1]) % mini_batch_size
        covered += sizes[-1]
    # torch.split, not slicing: the backward of a slice writes into a zero tensor of the whole sequence, which
    # made the backward quadratic in the number of chunks
    chunks = zip(*(torch.split(x, sizes, dim=2) for x in (q, k, v, lr)), strict=True)
    outputs = []
    position = state.position
    for (q_c, k_c, v_c, lr_c), n in zip(chunks, sizes, strict=True):
        close = position + n == mini_batch_size
        scale = scales[position : position + n]
        z, weights, pending = chunk_fn(q_c, k_c, v_c, lr_c, scale, weights, pending, close, norm, eps)
        outputs.append(z)
        position = 0 if close else position + n
    z = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    if norm is not None:
        z = q + layer_norm(z, norm[0], norm[1], eps)
    grad_sums = pending if pending is not None else tuple(torch.zeros_like(w) for w in weights)
    return z, TTTState(weights, grad_sums, position)


def run_ttt(
    chunk_fn: ChunkFn,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    params: tuple[Tensor, ...],
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    token_offset: Tensor | None,
    mini_batch_size: int,
    initial_state: TTTState | None,
    eps: float,
    max_chunk: int | None = None,
) -> tuple[Tensor, TTTState]:
    """Layout handling around ``scan_minibatches``: (B, T, H, d) in and out, state from ``params`` if none given."""
    qh, kh, vh = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    lrh = lr.transpose(1, 2).contiguous()
    state = initial_state if initial_state is not None else TTTState.initial(params, q.shape[0])
    if token_offset is None:
        token_offset = q.new_zeros(mini_batch_size)
    norm = None if ln_weight is None else (ln_weight.unsqueeze(1), ln_bias.unsqueeze(1))
    z, state = scan_minibatches(chunk_fn, qh, kh, vh, lrh, state, token_offset, mini_batch_size, norm, eps, max_chunk)
    return z.transpose(1, 2), state
