"""The ops against independent autograd-based gradient-descent loops (no code shared with tttlm.ops).

b = 1 is plain online gradient descent; b > 1 is mini-batch GD with every gradient of a mini-batch taken at
its start state W_s, the step for position i being ``max(1/i + δ_i, 0) · Σ_{s≤j≤i} lr_j ∇ℓ(W_s; j)``, with
the inner loss ``ℓ(W; j) = ½‖f(k_j; W) − v_j‖²``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from ttt_testing import FORMS, TTTInputs, Variant, assert_close, assert_state_close, make_inputs

from tttlm.ops import TTTState

Params = list[Tensor]  # state layout: weights (B, H, d_in, d_out), biases (B, H, 1, d_out)


def g_linear(x: Tensor, params: Params) -> Tensor:
    """x (B, H, 1, d) → x W (+ b)."""
    out = x @ params[0]
    return out + params[1] if len(params) > 1 else out


def g_mlp(x: Tensor, params: Params) -> Tensor:
    W1, b1, W2, b2 = params
    return F.gelu(x @ W1 + b1, approximate="tanh") @ W2 + b2


def make_f(inputs: TTTInputs, eps: float = 1e-6) -> Callable[[Tensor, Params], Tensor]:
    """``f(x) = x + LN(g(x))`` with a per-head F.layer_norm, or ``f = g`` without the norm."""
    g = g_linear if inputs.op == "linear" else g_mlp
    ln_w, ln_b = inputs.ln_weight, inputs.ln_bias

    def f(x: Tensor, params: Params) -> Tensor:
        y = g(x, params)
        if ln_w is None:
            return y
        d = y.shape[-1]
        normed = [F.layer_norm(y[:, h], (d,), ln_w[h], ln_b[h], eps) for h in range(y.shape[1])]
        return x + torch.stack(normed, dim=1)

    return f


def initial_params(inputs: TTTInputs) -> Params:
    batch = inputs.q.shape[0]
    out = []
    for p in inputs.params:
        if p is None:
            continue
        p = p.unsqueeze(1) if p.dim() == 2 else p  # bias (H, d) → (H, 1, d)
        out.append(p.unsqueeze(0).expand(batch, *p.shape).clone())
    return out


def token(x: Tensor, t: int) -> Tensor:
    """(B, T, H, d) → token t as (B, H, 1, d)."""
    return x[:, t].unsqueeze(2)


def loss_grads(f: Callable[[Tensor, Params], Tensor], params: Params, k_t: Tensor, v_t: Tensor) -> Params:
    """∇ of ½‖f(k_t; W) − v_t‖² w.r.t. each parameter, per (batch, head) (rows are independent, so summing
    the loss over them gives each row its own gradient)."""
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    loss = 0.5 * (f(k_t, leaves) - v_t).pow(2).sum()
    return list(torch.autograd.grad(loss, leaves))


def online_gd(inputs: TTTInputs) -> tuple[Tensor, Params]:
    """b = 1: after each token, W ← W − max(1 + δ_1, 0) lr_t ∇ℓ(W; t); output f(q_t; W_new)."""
    f = make_f(inputs)
    params = initial_params(inputs)
    delta = 0.0 if inputs.token_offset is None else inputs.token_offset[0].item()
    scale = max(1.0 + delta, 0.0)
    outputs = []
    for t in range(inputs.seq):
        grads = loss_grads(f, params, token(inputs.k, t), token(inputs.v, t))
        lr_t = inputs.lr[:, t][:, :, None, None]  # (B, H, 1, 1)
        params = [p - scale * lr_t * g for p, g in zip(params, grads, strict=True)]
        outputs.append(f(token(inputs.q, t), params).squeeze(2))
    return torch.stack(outputs, dim=1), params


def minibatch_gd(inputs: TTTInputs) -> tuple[Tensor, TTTState]:
    """Mini-batch GD; returns the outputs and (W_s, pending lr-weighted gradient sums, position)."""
    f = make_f(inputs)
    b = inputs.mini_batch_size
    params = initial_params(inputs)
    outputs = []
    sums = [torch.zeros_like(p) for p in params]
    position = 0
    for s in range(0, inputs.seq, b):
        sums = [torch.zeros_like(p) for p in params]
        current = params
        for i, t in enumerate(range(s, min(s + b, inputs.seq)), start=1):
            grads = loss_grads(f, params, token(inputs.k, t), token(inputs.v, t))  # at W_s
            lr_t = inputs.lr[:, t][:, :, None, None]
            sums = [acc + lr_t * g for acc, g in zip(sums, grads, strict=True)]
            scale = max(1.0 / i + inputs.token_offset[i - 1].item(), 0.0)
            current = [p - scale * acc for p, acc in zip(params, sums, strict=True)]
            outputs.append(f(token(inputs.q, t), current).squeeze(2))
            position = i
        if position == b:
            params, position = current, 0
            sums = [torch.zeros_like(p) for p in params]
    return torch.stack(outputs, dim=1), TTTState(tuple(params), tuple(sums), position)


REF_VARIANTS = [
    Variant("linear"),
    Variant("linear", bias=False),
    Variant("linear", ln=False),
    Variant("mlp"),
    Variant("mlp", ln=False),
]
REF_IDS = [v.id for v in REF_VARIANTS]


@pytest.mark.parametrize("variant", REF_VARIANTS, ids=REF_IDS)
@pytest.mark.parametrize("form", FORMS)
def test_b1_is_online_gradient_descent(variant: Variant, form: str) -> None:
    inputs = make_inputs(variant, seq=9, mini_batch_size=1, seed=3, offset_scale=0.2)
    z_ref, params_ref = online_gd(inputs)
    z, state = inputs.run(form)
    assert_close(z, z_ref)
    assert state.position == 0
    for w, w_ref in zip(state.weights, params_ref, strict=True):
        assert_close(w, w_ref)


@pytest.mark.parametrize("variant", REF_VARIANTS, ids=REF_IDS)
@pytest.mark.parametrize(("b", "seq"), [(2, 7), (4, 11), (4, 12), (8, 5)])
@pytest.mark.parametrize("form", FORMS)
def test_minibatch_gradient_descent(variant: Variant, b: int, seq: int, form: str) -> None:
    inputs = make_inputs(variant, seq=seq, mini_batch_size=b, seed=b + seq, offset_scale=0.1)
    z_ref, state_ref = minibatch_gd(inputs)
    z, state = inputs.run(form)
    assert_close(z, z_ref)
    assert_state_close(state, state_ref)


def test_negative_scale_is_clamped_to_zero() -> None:
    """δ_i < −1/i makes max(1/i + δ_i, 0) = 0: that position reads the mini-batch start W_s unchanged."""
    inputs = make_inputs(Variant("linear"), seq=8, mini_batch_size=4, seed=5)
    inputs.token_offset = torch.tensor([0.1, -2.0, 0.0, -0.5], dtype=torch.float64)  # scales 1.1, 0, 1/3, 0
    z_ref, state_ref = minibatch_gd(inputs)
    for form in FORMS:
        z, state = inputs.run(form)
        assert_close(z, z_ref)
        assert_state_close(state, state_ref)
    # the last position's scale is 0, so the mini-batch closes without moving: W stays W0
    w0 = initial_params(inputs)
    assert_close(state_ref.weights[0], w0[0])
    # and position 2 (scale 0) outputs f(q; W0): compare with a zero-lr run at that token
    f = make_f(inputs)
    assert_close(z_ref[:, 1], f(token(inputs.q, 1), w0).squeeze(2))


def test_reference_loop_is_not_trivial() -> None:
    """Guard for the reference itself: the updates change the outputs, and δ matters."""
    inputs = make_inputs(Variant("mlp"), seq=6, mini_batch_size=3, seed=1, offset_scale=0.1)
    z_ref, _ = minibatch_gd(inputs)
    frozen = make_f(inputs)(inputs.q.transpose(1, 2), initial_params(inputs)).transpose(1, 2)
    assert (z_ref - frozen).abs().max() > 1e-3
    inputs.token_offset = torch.zeros_like(inputs.token_offset)
    z_zero, _ = minibatch_gd(inputs)
    assert (z_ref[:, 1:3] - z_zero[:, 1:3]).abs().max() > 1e-4
