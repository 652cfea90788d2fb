"""TTT-Linear, dual form (paper §2.6): every output of a mini-batch from matrix products only.

With G = ∂ℓ/∂z at W_s for the n tokens of the chunk (n × d) and the step sizes η[i, j] = scale_i lr_j,

    z_i = q_i W_s + b_s − scale_i (q_i S_W + S_b) − Σ_{j≤i} η[i, j] (q_i·k_j + 1) G_j,

i.e. ``Z = Q W_s + b_s − (η ⊙ tril(Q Kᵀ + 1)) G`` (S: sums pending from earlier in the mini-batch); the
per-token states W_i are never formed. The sums grow by ``Kᵀ (lr ⊙ G)`` and ``Σ lr ⊙ G``.

Over a span of M whole mini-batches (``dual_linear_span``) what does not depend on the running state is computed
for all of them at once: ``η ⊙ tril(Q Kᵀ + 1)``, the LayerNorm-gradient offsets, the update operands
``scale_b (lr ⊙ K)ᵀ``. The sequential loop then runs seven small kernels per mini-batch (instead of about 25):
``K W_s`` and the LayerNorm gradient G (four), the queries' read ``Q W_s − (η ⊙ tril(Q Kᵀ + 1)) G`` (two) and
the update ``W_s − scale_b Kᵀ (lr ⊙ G)`` (one). The bias rides along as a last row of W, read through a column
of ones appended to q and k (which is where the ``+ 1`` comes from), so the layer is one matrix and its update
one product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tttlm.ops.scan import Norm, Weights, reconstruction_grad_from, reconstruction_offsets
from tttlm.ops.ttt_linear.primal import affine, linear_chunk


def causal_step_sizes(scale: Tensor, lr: Tensor) -> Tensor:
    """``tril(η)`` with η[i, j] = scale_i lr_j: token i's step size on token j's gradient (j ≤ i).

    scale: (n,); lr: (..., n). Returns (..., n, n).
    """
    return (scale[:, None] * lr.unsqueeze(-2)).tril()


def dual_linear_layer(
    x_q: Tensor,
    x_k: Tensor,
    grad: Tensor,
    lr: Tensor,
    scale: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    pending: Weights | None,
) -> tuple[Tensor, Weights]:
    """Same contract as ``naive.primal_linear_layer``; O(n² d + n d²) per (batch, head), no W_i formed."""
    attn = x_q @ x_k.transpose(-1, -2)
    if bias is not None:
        attn = attn + 1.0
    out = affine(x_q, weight, bias) - (attn * causal_step_sizes(scale, lr)) @ grad
    lr_grad = lr.unsqueeze(-1) * grad
    sums = [x_k.transpose(-1, -2) @ lr_grad]
    if bias is not None:
        sums.append(lr_grad.sum(dim=2, keepdim=True))
    if pending is not None:
        out = out - scale[:, None] * affine(x_q, *pending)
        sums = [s + p for s, p in zip(sums, pending, strict=True)]
    return out, tuple(sums)


dual_chunk = linear_chunk(dual_linear_layer)


# ------------------------------------------------------------------------ spans of whole mini-batches


def by_minibatch(x: Tensor, mini_batch_size: int) -> Tensor:
    """(B, H, M·b, *rest) → (B·H, M, b, *rest): one row of mini-batches per (batch, head)."""
    return x.reshape(x.shape[0] * x.shape[1], -1, mini_batch_size, *x.shape[3:])


def with_ones(x: Tensor) -> Tensor:
    """Append a column of ones (the input of the bias row of an augmented weight). x: (..., d) → (..., d + 1)."""
    return F.pad(x, (0, 1), value=1.0)


def augment(weight: Tensor, bias: Tensor) -> Tensor:
    """``[W; b]``: (B, H, d_in, d_out) and (B, H, 1, d_out) → (B·H, d_in + 1, d_out)."""
    return torch.cat([weight, bias], dim=-2).flatten(0, 1)


def split_augmented(weight: Tensor, batch: int) -> Weights:
    """Inverse of ``augment``: (B·H, d_in + 1, d_out) → W (B, H, d_in, d_out), b (B, H, 1, d_out)."""
    weight = weight.unflatten(0, (batch, -1))
    return weight[..., :-1, :], weight[..., -1:, :]


def update_operand(x: Tensor, lr: Tensor) -> Tensor:
    """``(lr ⊙ x)ᵀ``, so that ``W − (lr ⊙ x)ᵀ G`` is one product. x: (..., n, d_in); lr: (..., n) → (..., d_in, n)."""
    return (x * lr.unsqueeze(-1)).transpose(-1, -2)


def span_setup(k: Tensor, v: Tensor, lr: Tensor, scale: Tensor, norm: Norm) -> tuple[Tensor, Tensor | None, Tensor]:
    """What every span's loop needs from the inputs, for all mini-batches at once.

    k, v: (B, H, M·b, d); lr: (B, H, M·b); scale: (b,). Returns the reconstruction-gradient offsets
    (B·H, M, b, d), the LayerNorm slope γ² broadcastable to (B·H, b, d) (None without the norm) and the
    step sizes of the updates ``scale_b lr`` (B·H, M, b).
    """
    b = scale.shape[0]
    offsets = by_minibatch(reconstruction_offsets(k, v, norm), b)
    slope = None
    if norm is not None:
        slope = norm[0].square().expand(k.shape[0], -1, -1, -1).flatten(0, 1)
    return offsets, slope, scale[-1] * by_minibatch(lr, b)


def dual_linear_span(
    q: Tensor, k: Tensor, v: Tensor, lr: Tensor, scale: Tensor, weights: Weights, norm: Norm, eps: float
) -> tuple[Tensor, Weights]:
    """M whole mini-batches from a mini-batch boundary (nothing pending); the scan's span contract.

    q, k, v: (B, H, M·b, d); lr: (B, H, M·b); scale: (b,); weights: W (B, H, d, d)[, b (B, H, 1, d)]; norm: the
    inner LayerNorm's (γ, β) as (H, 1, d), or None. Returns the pre-norm outputs ``g(q_i; W_i)`` (B, H, M·b, d)
    and the weights after the last mini-batch.
    """
    batch, b = q.shape[0], scale.shape[0]
    has_bias = len(weights) > 1
    Q, K = by_minibatch(q, b), by_minibatch(k, b)
    if has_bias:
        Q, K, W = with_ones(Q), with_ones(K), augment(*weights)
    else:
        W = weights[0].flatten(0, 1)
    offsets, slope, close_lr = span_setup(k, v, lr, scale, norm)
    steps = (Q @ K.transpose(-1, -2)) * causal_step_sizes(scale, by_minibatch(lr, b))
    outputs = []
    minibatches = zip(
        K.unbind(1), Q.unbind(1), update_operand(K, close_lr).unbind(1), offsets.unbind(1), steps.unbind(1), strict=True
    )
    for k_m, q_m, update_m, offsets_m, steps_m in minibatches:
        grad = reconstruction_grad_from(torch.bmm(k_m, W), offsets_m, slope, eps)
        # the queries read W_s here, while it is in cache (cheaper than one batched product over stacked states)
        outputs.append(torch.baddbmm(torch.bmm(q_m, W), steps_m, grad, alpha=-1.0))
        W = torch.baddbmm(W, update_m, grad, alpha=-1.0)
    final = split_augmented(W, batch) if has_bias else (W.unflatten(0, (batch, -1)),)
    return torch.stack(outputs, 1).reshape(q.shape), final
