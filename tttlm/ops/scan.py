"""The loop over mini-batches shared by every form of every TTT op.

Mini-batch TTT (paper §2.5): inside a mini-batch starting at s, every gradient is taken at W_s, and query
position i (1-based inside the mini-batch) sees ``W_i = W_s − scale_i Σ_{j≤i} lr_j ∇ℓ(W_s; j)`` with
``scale_i = max(1/i + δ_i, 0)``. The state carried to the next mini-batch is W at its last position.

A *chunk function* computes one run of tokens that stays inside one mini-batch; the forms (primal, dual,
step) differ only in how. This module cuts the sequence at mini-batch boundaries (taking into account a
mini-batch left open by an earlier call), threads the state through, and applies the inner LayerNorm +
residual to the query outputs.

A form may also give a *span function*, which computes a run of whole mini-batches in one call (the dual form
does, to compute everything that does not depend on the running inner model for all of them at once, outside
its sequential loop); the scan then hands it every run of whole mini-batches and keeps the chunk function for
the partial ones at either end (an open mini-batch continued from an earlier call, a sequence ending inside one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from tttlm.ops.inner_norm import layer_norm_backward, layer_norm_l2_grad, standardise
from tttlm.ops.state import TTTState

Weights = tuple[Tensor, ...]
Norm = tuple[Tensor, Tensor] | None
# (q, k, v, lr, scale, weights, pending, close, norm, eps) -> (pre-norm query outputs, weights, pending)
ChunkFn = Callable[
    [Tensor, Tensor, Tensor, Tensor, Tensor, Weights, Weights | None, bool, Norm, float],
    tuple[Tensor, Weights, Weights | None],
]
# (q, k, v, lr, scale, weights, norm, eps) -> (pre-norm query outputs, weights after the last mini-batch); the
# inputs span whole mini-batches starting at a mini-batch boundary (nothing pending)
SpanFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Weights, Norm, float], tuple[Tensor, Weights]]
# rows (batch × heads × tokens) per span: bounds a span function's temporaries (the span's keys, queries,
# offsets, ... as (rows, d) blocks) to a few megabytes each in float32; longer spans gain nothing (the batched work
# is already amortised) but touch more fresh memory
SPAN_ROWS = 2**14


class ScanForm(NamedTuple):
    """How a form computes the sequence: per chunk, and optionally per span of whole mini-batches."""

    chunk: ChunkFn
    span: SpanFn | None = None


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


def reconstruction_offsets(k: Tensor, v: Tensor, norm: Norm) -> Tensor:
    """The part of ``reconstruction_grad`` that does not depend on the inner model, for many tokens at once:
    v without the norm, else the LayerNorm-L2 offset ``(β − (v − k)) γ``. k, v: (B, H, T, d)."""
    if norm is None:
        return v
    # (β − (v − k)) γ, the same roundings, written from k so that the result takes k's layout (v may be a strided
    # view: the layers hand it over without a transposing copy)
    return (k - v + norm[1]) * norm[0]


def reconstruction_grad_from(zk: Tensor, offsets: Tensor, slope: Tensor | None, eps: float) -> Tensor:
    """``reconstruction_grad`` from the ``reconstruction_offsets`` of the same tokens; ``slope``: γ², or None
    without the norm. zk, offsets: (..., n, d); slope broadcastable to them."""
    if slope is None:
        return zk - offsets
    return layer_norm_backward(zk, slope, offsets, eps)


def close_or_pend(weights: Weights, sums: Weights, last_scale: Tensor, close: bool) -> tuple[Weights, Weights | None]:
    """End of a chunk: apply the accumulated update if the mini-batch is complete, else keep it pending."""
    if close:
        return tuple(w - last_scale * s for w, s in zip(weights, sums, strict=True)), None
    return weights, sums


def plan_pieces(
    seq: int, position: int, mini_batch_size: int, max_chunk: int | None, max_span: int
) -> list[tuple[int, bool]]:
    """Cut ``seq`` tokens, the first at ``position`` inside its mini-batch, into pieces ``(length, is_span)``.

    Chunks stay inside one mini-batch: first up to the end of the open one, then whole mini-batches, capped at
    ``max_chunk`` tokens. With ``max_span`` > 0, runs of whole mini-batches are merged into spans of at most
    ``max_span`` mini-batches each.
    """
    pieces: list[tuple[int, bool]] = []
    covered = 0
    while covered < seq:
        n = min(seq - covered, mini_batch_size - position, max_chunk or mini_batch_size)
        whole = max_span > 0 and position == 0 and n == mini_batch_size
        if whole and pieces and pieces[-1][1] and pieces[-1][0] < max_span * mini_batch_size:
            pieces[-1] = (pieces[-1][0] + n, True)
        else:
            pieces.append((n, whole))
        position = (position + n) % mini_batch_size
        covered += n
    return pieces


def scan_minibatches(
    form: ScanForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    state: TTTState,
    token_offset: Tensor,
    norm: Norm,
    eps: float,
    max_chunk: int | None = None,
) -> tuple[Tensor, TTTState]:
    """Run ``form`` over the sequence in mini-batch-aligned chunks (and spans of whole mini-batches).

    q, k, v: (B, H, T, d); lr: (B, H, T); token_offset: (b,) the step-size offsets δ, whose length is the
    mini-batch size b. ``max_chunk`` caps chunk length (1 for token-by-token decoding). Returns the query outputs
    (B, H, T, d), after the inner norm and residual when ``norm`` is given, and the final state.
    """
    mini_batch_size = token_offset.shape[0]
    weights = state.weights
    pending = state.grad_sums if state.position else None
    scales = token_scales(token_offset)
    max_span = 0 if form.span is None else max(1, SPAN_ROWS // (q.shape[0] * q.shape[1] * mini_batch_size))
    pieces = plan_pieces(q.shape[2], state.position, mini_batch_size, max_chunk, max_span)
    # torch.split, not slicing: the backward of a slice writes into a zero tensor of the whole sequence, which
    # made the backward quadratic in the number of chunks
    sizes = [n for n, _ in pieces]
    chunks = zip(*(torch.split(x, sizes, dim=2) for x in (q, k, v, lr)), strict=True)
    outputs = []
    position = state.position
    for (q_c, k_c, v_c, lr_c), (n, is_span) in zip(chunks, pieces, strict=True):
        if is_span:
            z, weights = form.span(q_c, k_c, v_c, lr_c, scales, weights, norm, eps)
        else:
            close = position + n == mini_batch_size
            scale = scales[position : position + n]
            z, weights, pending = form.chunk(q_c, k_c, v_c, lr_c, scale, weights, pending, close, norm, eps)
            position = 0 if close else position + n
        outputs.append(z)
    z = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    if norm is not None:  # f(q) = q + LN(g(q)): the residual and β in one pass, γ in the next
        z = torch.addcmul(q + norm[1], standardise(z, eps), norm[0])
    grad_sums = pending if pending is not None else tuple(torch.zeros_like(w) for w in weights)
    return z, TTTState(weights, grad_sums, position)


def run_ttt(
    form: ScanForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    params: tuple[Tensor, ...],
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    token_offset: Tensor,
    initial_state: TTTState | None,
    eps: float,
    max_chunk: int | None = None,
) -> tuple[Tensor, TTTState]:
    """Layout handling around ``scan_minibatches``: (B, T, H, d) in and out, state from ``params`` if none given."""
    # v only enters elementwise (the reconstruction targets): a strided view of it serves without a copy
    qh, kh, vh = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(), v.transpose(1, 2)
    lrh = lr.transpose(1, 2).contiguous()
    state = initial_state if initial_state is not None else TTTState.initial(params, q.shape[0])
    norm = None if ln_weight is None else (ln_weight.unsqueeze(1), ln_bias.unsqueeze(1))
    z, state = scan_minibatches(form, qh, kh, vh, lrh, state, token_offset, norm, eps, max_chunk)
    return z.transpose(1, 2), state
