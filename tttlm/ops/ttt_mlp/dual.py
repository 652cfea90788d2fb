"""TTT-MLP, dual form: each of the two inner layers read through ``dual_linear_layer``.

Layer 1 sees the keys/queries and the gradients ∂ℓ/∂z1; layer 2 sees the hidden activations (the keys'
at W_s, the queries' at their own W1_i) and ∂ℓ/∂z2. No per-token weights are formed.

Over a span of whole mini-batches (``dual_mlp_span``) the step sizes, the column of ones of the keys and queries
and the LayerNorm offsets are computed for all mini-batches at once; the sequential loop does per mini-batch
what depends on the running inner model: the keys' forward and backward through the MLP at W_s, both layers'
reads by the queries, and the two updates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tttlm.ops.inner_norm import gelu_tanh, gelu_tanh_backward
from tttlm.ops.scan import Norm, Weights, reconstruction_grad_from
from tttlm.ops.ttt_linear.dual import (
    augment,
    by_minibatch,
    causal_step_sizes,
    dual_linear_layer,
    span_setup,
    split_augmented,
    update_operand,
    with_ones,
)
from tttlm.ops.ttt_mlp.primal import mlp_chunk

dual_chunk = mlp_chunk(dual_linear_layer)


def dual_mlp_span(
    q: Tensor, k: Tensor, v: Tensor, lr: Tensor, scale: Tensor, weights: Weights, norm: Norm, eps: float
) -> tuple[Tensor, Weights]:
    """M whole mini-batches from a mini-batch boundary; the contract of ``ttt_linear.dual.dual_linear_span`` with
    weights (W1 (B, H, d, h), b1 (B, H, 1, h), W2 (B, H, h, d), b2 (B, H, 1, d)).

    Both layers are kept augmented with their bias row (W1: (B·H, d + 1, h), W2: (B·H, h + 1, d)), so that each
    update is one product.
    """
    batch, b = q.shape[0], scale.shape[0]
    Q, K = with_ones(by_minibatch(q, b)), with_ones(by_minibatch(k, b))
    W1, W2 = augment(*weights[:2]), augment(*weights[2:])
    offsets, slope, close_lr = span_setup(k, v, lr, scale, norm)
    step_sizes = causal_step_sizes(scale, by_minibatch(lr, b))
    steps1 = (Q @ K.transpose(-1, -2)) * step_sizes
    outputs = []
    minibatches = zip(
        *(x.unbind(1) for x in (K, Q, update_operand(K, close_lr), offsets, steps1, step_sizes, close_lr)), strict=True
    )
    for k_m, q_m, update1_m, offsets_m, steps1_m, step_sizes_m, close_lr_m in minibatches:
        z1k = torch.bmm(k_m, W1)
        x2k = with_ones(gelu_tanh(z1k))
        grad2 = reconstruction_grad_from(torch.bmm(x2k, W2), offsets_m, slope, eps)
        # ∂ℓ/∂z1 back through W2 (its bias row takes no part) and GELU at W_s
        grad1 = gelu_tanh_backward(torch.bmm(grad2, W2[:, :-1].transpose(-1, -2)), z1k)
        # the queries read both layers in dual form: layer 1, GELU, then layer 2 on their own hidden activations
        x2q = with_ones(gelu_tanh(torch.baddbmm(torch.bmm(q_m, W1), steps1_m, grad1, alpha=-1.0)))
        steps2 = torch.bmm(x2q, x2k.transpose(-1, -2)) * step_sizes_m
        outputs.append(torch.baddbmm(torch.bmm(x2q, W2), steps2, grad2, alpha=-1.0))
        W1 = torch.baddbmm(W1, update1_m, grad1, alpha=-1.0)
        W2 = torch.baddbmm(W2, update_operand(x2k, close_lr_m), grad2, alpha=-1.0)
    final = (*split_augmented(W1, batch), *split_augmented(W2, batch))
    return torch.stack(outputs, 1).reshape(q.shape), final
