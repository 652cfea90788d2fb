"""TTT-MLP, ``form="triton"``: fused Triton kernels (forward, backward, decode step).

Imported lazily through ``tttlm.ops.kernel_forms`` (this module imports triton). One program per
(batch, head). The inner MLP (W1: d × h, W2: h × d, h = 4d: 128 KB of float32 at d = 64) does not fit in one
program's registers, so it lives in a float32 workspace in global memory (L2-resident: one (batch, head) slice
per program) and is streamed through in ``BH``-column tiles of the hidden layer; b2 and every per-token tile
([BB, d], [BB, BH], [BB, BB]) stay on chip.

- ``_mlp_fwd_kernel``, per mini-batch, two passes over the hidden tiles. Pass A: key-side forward
  ``Z2k = gelu(K W1 + b1) W2 + b2``; then G2, the fused LayerNorm-L2 gradient. Pass B, per tile: the key-side
  hidden activations again, ``G1 = (G2 W2ᵀ) ⊙ gelu'(K W1 + b1)``, the query-side layer 1 in dual form
  ``Z1 = Q W1 + b1 − tril(η ⊙ (Q Kᵀ + 1)) G1``, ``X2 = gelu(Z1)``, and the accumulations of ``X2 W2`` and
  ``X2 X2kᵀ`` for layer 2; the tile's update (``W −= scale_b Σ lr ⊙ ∇``) is written back when the mini-batch
  closes (else its sums are returned as the open state). Then layer 2's dual-form output, b2's update and the
  output LayerNorm + residual. With ``SAVE`` the state at the start of every mini-batch is stored for backward
  (n_mb × (2dh + h + d) floats per (batch, head); never per-token states).
- ``_mlp_bwd_kernel`` walks the mini-batches last to first; each is recomputed from its saved start state and
  differentiated by hand (below). ∂L/∂(W1, b1, W2) after the current mini-batch is carried in a float32
  workspace (the output buffers, updated in place tile by tile), ∂L/∂b2 on chip.
- ``_mlp_step_kernel``: one decode token, the same two passes as the forward with vectors.

Backward maths. One mini-batch of rows i (masked rows: zeros with lr = 0), start weights W1, b1, W2, b2,
pending sums S1, s1, S2, s2 (zero unless an earlier call opened the mini-batch), step scales c_i (c_b the
last one), η_ij = c_i lr_j below the diagonal. The forward is::

    Z1k = K W1 + b1,  X2k = gelu(Z1k),  Z2k = X2k W2 + b2,  G2 = ∇ℓ(Z2k)   (LN-L2 gradient, target V − K;
                                                                            Z2k − V without the inner LN)
    P1 = G2 W2ᵀ,  G1 = P1 ⊙ gelu'(Z1k)                                    (∂ℓ/∂X2k, ∂ℓ/∂Z1k at the start state)
    A1 = Q Kᵀ + 1,  Z1q = Q W1 + b1 − (η ⊙ A1) G1 − c ⊙ (Q S1 + s1),  X2q = gelu(Z1q)
    A2 = X2q X2kᵀ + 1,  Z2q = X2q W2 + b2 − (η ⊙ A2) G2 − c ⊙ (X2q S2 + s2),  O = Q + LN(Z2q)
    L1 = lr ⊙ G1, L2 = lr ⊙ G2;  S1' = S1 + Kᵀ L1, s1' = s1 + Σ L1, S2' = S2 + X2kᵀ L2, s2' = s2 + Σ L2
    closes: W' = W − c_b S' for each of the four;  stream ends inside it: (W, S') returned

Its adjoint, from dO and the cotangents of what the mini-batch hands on (dW' carried back from the next
mini-batch, or from the final state; dS' of the returned sums)::

    dS' = −c_b dW' and dc_b −= Σ ⟨dW', S'⟩ (closes), else dS' = the returned sums' cotangents
    dZ2q = LN backward of dO (dQ = dO);   dE2 = −tril(dZ2q G2ᵀ): dA2 = dE2 ⊙ η, dc, dlr from dE2 ⊙ A2
    dL2 = X2k dS2' + ds2',  dlr += Σ G2 ⊙ dL2
    dX2q = dZ2q W2ᵀ + dA2 X2k − (c ⊙ dZ2q) S2ᵀ,  dZ1q = dX2q ⊙ gelu'(Z1q)
    dL1 = K dS1' + ds1',  dlr += Σ G1 ⊙ dL1,  dG1 = lr ⊙ dL1 − (η ⊙ A1)ᵀ dZ1q,  dE1 = −tril(dZ1q G1ᵀ)
    dP1 = dG1 ⊙ gelu'(Z1k),  dG2 = lr ⊙ dL2 − (η ⊙ A2)ᵀ dZ2q + dP1 W2
    dZ2k = adjoint of the LN-L2 gradient at dG2 (with dV, the target's part of dK, dγ, dβ)
    dX2k = dA2ᵀ X2q + L2 dS2'ᵀ + dZ2k W2ᵀ,  dZ1k = dX2k ⊙ gelu'(Z1k) + dG1 ⊙ P1 ⊙ gelu''(Z1k)
    dQ += dZ1q W1ᵀ + dA1 K − (c ⊙ dZ1q) S1ᵀ,  dK += dA1ᵀ Q + L1 dS1'ᵀ + dZ1k W1ᵀ
    dW1 = dW1' + Qᵀ dZ1q + Kᵀ dZ1k,  dW2 = dW2' + X2qᵀ dZ2q + dP1ᵀ G2 + X2kᵀ dZ2k,  db = db' + row sums
    pending: dS1 = dS1' − Qᵀ (c ⊙ dZ1q), dS2 = dS2' − X2qᵀ (c ⊙ dZ2q) (s1, s2: row sums),
             dc_i −= ⟨dZ1q, Q S1 + s1⟩_i + ⟨dZ2q, X2q S2 + s2⟩_i

The kernel makes four passes over the hidden tiles per mini-batch, each needing what the previous completed:
A: Z2k (then G2, A1); B: Z2q, A2 and X2k dS2' (then dZ2q, dA2, dL2); C: per tile everything that does not flow
through dZ2k — dZ1q, dG1, dP1, the accumulations of dG2, dE1, dQ, dK, the tile's weight gradients from Q, X2q,
P1, and the partial dZ1k (every term but dZ2k's), stored in a [BB, h] float32 scratch per program; after it,
dG2 is complete, hence dZ2k; D: dZ1k, the K and X2k terms.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from tttlm.ops.scan import token_scales
from tttlm.ops.state import TTTState
from tttlm.ops.triton_common import (
    check_launchable,
    dot_precision,
    eta,
    eta_backward,
    fp32,
    gelu_tanh,
    gelu_tanh_grad,
    gelu_tanh_grad2,
    ln_l2_grad,
    ln_l2_grad_backward,
    ln_l2_grad_parts,
    ln_residual,
    ln_residual_backward,
    load_inner_norm,
    load_minibatch,
    load_step_scales,
    load_tile,
    needs_grad,
    num_minibatches,
    row_block,
    tril_mask,
)


@triton.jit
def _tile_offsets(h0, cd, ch, D: tl.constexpr, HID: tl.constexpr):
    """Offsets of hidden tile [h0, h0 + BH) in W1 (D, HID) and W2 (HID, D): ([D, BH], [BH, D])."""
    return cd[:, None] * HID + (h0 + ch)[None, :], (h0 + ch)[:, None] * D + cd[None, :]


@triton.jit
def _keys_forward(
    K,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2,
    wbase,
    hbase,
    cd,
    ch,
    D: tl.constexpr,
    HID: tl.constexpr,
    BH: tl.constexpr,
    PREC: tl.constexpr,
):
    """``Z2k = gelu(K W1 + b1) W2 + b2`` [BB, D], streaming the weights' hidden tiles (W1 at w1_ptr + wbase,
    b1 at b1_ptr + hbase, W2 at w2_ptr + wbase)."""
    Z2k = tl.zeros_like(K) + b2[None, :]
    for h0 in range(0, HID, BH):
        w1_offs, w2_offs = _tile_offsets(h0, cd, ch, D, HID)
        W1t = tl.load(w1_ptr + wbase + w1_offs)
        b1t = tl.load(b1_ptr + hbase + h0 + ch)
        W2t = tl.load(w2_ptr + wbase + w2_offs)
        X2k = gelu_tanh(tl.dot(K, W1t, input_precision=PREC) + b1t[None, :])
        Z2k += tl.dot(X2k, W2t, input_precision=PREC)
    return Z2k


@triton.jit
def _hidden_tile(Q, K, G2, E1, scale, W1t, b1t, W2t, s0w1_ptrs, s0b1_ptrs, pending, PREC: tl.constexpr):
    """Layer 1 of a mini-batch on one hidden tile, at its start weights.

    s0w1_ptrs [D, BH], s0b1_ptrs [BH]: the tile of the sums pending from an earlier call, read when ``pending``.
    Returns [BB, BH] each: the keys' pre-activations Z1k = K W1 + b1, gelu'(Z1k), P1 = G2 W2ᵀ (∂ℓ/∂X2k),
    G1 = P1 ⊙ gelu'(Z1k) (∂ℓ/∂Z1k) and the queries' dual-form pre-activations
    ``Z1q = Q W1 + b1 − E1 G1 (− scale ⊙ (Q S1 + s1))``."""
    Z1k = tl.dot(K, W1t, input_precision=PREC) + b1t[None, :]
    slope = gelu_tanh_grad(Z1k)
    P1 = tl.dot(G2, tl.trans(W2t), input_precision=PREC)
    G1 = P1 * slope
    Z1q = tl.dot(Q, W1t, input_precision=PREC) + b1t[None, :] - tl.dot(E1, G1, input_precision=PREC)
    if pending:
        pend = tl.dot(Q, tl.load(s0w1_ptrs), input_precision=PREC) + tl.load(s0b1_ptrs)[None, :]
        Z1q = Z1q - scale[:, None] * pend
    return Z1k, slope, P1, G1, Z1q


@triton.jit
def _layer2_tile(X2q, X2k, scale, W2t, s0w2_ptrs, pending, PREC: tl.constexpr):
    """One hidden tile's share of layer 2 read by the queries: (``X2q W2 (− scale ⊙ X2q S2)`` [BB, D],
    ``X2q X2kᵀ`` [BB, BB]); s0w2_ptrs [BH, D]: the tile of the pending sums, read when ``pending``."""
    Z2q = tl.dot(X2q, W2t, input_precision=PREC)
    if pending:
        Z2q = Z2q - scale[:, None] * tl.dot(X2q, tl.load(s0w2_ptrs), input_precision=PREC)
    return Z2q, tl.dot(X2q, tl.trans(X2k), input_precision=PREC)


@triton.jit
def _mlp_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lr_ptr,
    out_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    b2_out_ptr,
    sw1_in_ptr,
    sb1_in_ptr,
    sw2_in_ptr,
    sb2_in_ptr,
    sw1_out_ptr,
    sb1_out_ptr,
    sw2_out_ptr,
    sb2_out_ptr,
    ck_w1_ptr,
    ck_b1_ptr,
    ck_w2_ptr,
    ck_b2_ptr,
    scale_ptr,
    lnw_ptr,
    lnb_ptr,
    T,
    H,
    P0,
    NM,
    eps,
    D: tl.constexpr,
    HID: tl.constexpr,
    BH: tl.constexpr,
    MB: tl.constexpr,
    BB: tl.constexpr,
    HAS_NORM: tl.constexpr,
    SAVE: tl.constexpr,
    PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    rows = tl.arange(0, BB)
    cd = tl.arange(0, D)
    ch = tl.arange(0, BH)
    mbase = pid.to(tl.int64) * D * HID  # W1 (D, HID) and W2 (HID, D) slices of this (batch, head)
    hbase = pid.to(tl.int64) * HID
    dbase = pid.to(tl.int64) * D
    b2 = tl.load(b2_ptr + dbase + cd)
    gamma, beta = load_inner_norm(lnw_ptr, lnb_ptr, hi, cd, D, HAS_NORM)
    scale, last_scale = load_step_scales(scale_ptr, rows, MB)
    tril = tril_mask(rows)
    seq0 = bi.to(tl.int64) * T
    for m in range(NM):
        valid, _tok, offs, Q, K, V, lr = load_minibatch(
            q_ptr, k_ptr, v_ptr, lr_ptr, m, P0, T, seq0, H, hi, rows, cd, MB, D
        )
        pending = (m == 0) & (P0 > 0)
        close = (m + 1) * MB <= P0 + T
        ck = pid.to(tl.int64) * NM + m

        # pass A: key-side forward through the MLP at the mini-batch's start state
        Z2k = _keys_forward(K, w1_ptr, b1_ptr, w2_ptr, b2, mbase, hbase, cd, ch, D, HID, BH, PREC)
        if HAS_NORM:  # noqa: SIM108 (constexpr branch: only one side is compiled)
            G2 = ln_l2_grad(Z2k, V - K, gamma, beta, D, eps)
        else:
            G2 = Z2k - V
        L2 = lr[:, None] * G2
        E1 = eta(tl.dot(Q, tl.trans(K), input_precision=PREC) + 1.0, scale, lr, tril)

        # pass B: per hidden tile, layer 1 (dual form), its update, and layer 2's accumulations
        Z2q = tl.zeros([BB, D], tl.float32) + b2[None, :]
        A2 = tl.zeros([BB, BB], tl.float32) + 1.0
        for h0 in range(0, HID, BH):
            w1_offs, w2_offs = _tile_offsets(h0, cd, ch, D, HID)
            W1t = tl.load(w1_ptr + mbase + w1_offs)
            b1t = tl.load(b1_ptr + hbase + h0 + ch)
            W2t = tl.load(w2_ptr + mbase + w2_offs)
            if SAVE:
                tl.store(ck_w1_ptr + ck * D * HID + w1_offs, W1t)
                tl.store(ck_b1_ptr + ck * HID + h0 + ch, b1t)
                tl.store(ck_w2_ptr + ck * D * HID + w2_offs, W2t)
            s0w1, s0b1 = sw1_in_ptr + mbase + w1_offs, sb1_in_ptr + hbase + h0 + ch
            s0w2 = sw2_in_ptr + mbase + w2_offs
            Z1k, _, _, G1, Z1q = _hidden_tile(Q, K, G2, E1, scale, W1t, b1t, W2t, s0w1, s0b1, pending, PREC)
            X2k = gelu_tanh(Z1k)
            z2, a2 = _layer2_tile(gelu_tanh(Z1q), X2k, scale, W2t, s0w2, pending, PREC)
            Z2q += z2
            A2 += a2
            L1 = lr[:, None] * G1
            SW1 = tl.dot(tl.trans(K), L1, input_precision=PREC)
            Sb1 = tl.sum(L1, axis=0)
            SW2 = tl.dot(tl.trans(X2k), L2, input_precision=PREC)
            if pending:
                SW1 = SW1 + tl.load(s0w1)
                Sb1 = Sb1 + tl.load(s0b1)
                SW2 = SW2 + tl.load(s0w2)
            if close:
                # the tile is overwritten in place: every thread's reads of it (for the products above) come first
                tl.debug_barrier()
                tl.store(w1_ptr + mbase + w1_offs, W1t - last_scale * SW1)
                tl.store(b1_ptr + hbase + h0 + ch, b1t - last_scale * Sb1)
                tl.store(w2_ptr + mbase + w2_offs, W2t - last_scale * SW2)
            else:
                tl.store(sw1_out_ptr + mbase + w1_offs, SW1)
                tl.store(sb1_out_ptr + hbase + h0 + ch, Sb1)
                tl.store(sw2_out_ptr + mbase + w2_offs, SW2)

        # layer 2 in dual form, b2's update, output
        Z2q = Z2q - tl.dot(eta(A2, scale, lr, tril), G2, input_precision=PREC)
        Sb2 = tl.sum(L2, axis=0)
        if pending:
            S0b2 = tl.load(sb2_in_ptr + dbase + cd)
            Z2q = Z2q - scale[:, None] * S0b2[None, :]
            Sb2 = Sb2 + S0b2
        if SAVE:
            tl.store(ck_b2_ptr + ck * D + cd, b2)
        if close:
            b2 = b2 - last_scale * Sb2
        else:
            tl.store(sb2_out_ptr + dbase + cd, Sb2)
        if HAS_NORM:
            Z2q = ln_residual(Q, Z2q, gamma, beta, D, eps)
        tl.store(out_ptr + offs, Z2q.to(out_ptr.dtype.element_ty), mask=valid[:, None])
        # the next mini-batch reads the weight tiles written above, possibly from other threads
        tl.debug_barrier()
    tl.store(b2_out_ptr + dbase + cd, b2)


@triton.jit
def _mlp_bwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lr_ptr,
    do_ptr,
    ck_w1_ptr,
    ck_b1_ptr,
    ck_w2_ptr,
    ck_b2_ptr,
    sw1_in_ptr,
    sb1_in_ptr,
    sw2_in_ptr,
    sb2_in_ptr,
    dsw1_fin_ptr,
    dsb1_fin_ptr,
    dsw2_fin_ptr,
    dsb2_fin_ptr,
    db2_fin_ptr,
    scale_ptr,
    lnw_ptr,
    lnb_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    dlr_ptr,
    dw1_ptr,
    db1_ptr,
    dw2_ptr,
    db2_ptr,
    dsw1_0_ptr,
    dsb1_0_ptr,
    dsw2_0_ptr,
    dsb2_0_ptr,
    dscale_ptr,
    dlnw_ptr,
    dlnb_ptr,
    scratch_ptr,
    T,
    H,
    P0,
    NM,
    eps,
    D: tl.constexpr,
    HID: tl.constexpr,
    BH: tl.constexpr,
    MB: tl.constexpr,
    BB: tl.constexpr,
    HAS_NORM: tl.constexpr,
    PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    rows = tl.arange(0, BB)
    cd = tl.arange(0, D)
    ch = tl.arange(0, BH)
    mbase = pid.to(tl.int64) * D * HID
    hbase = pid.to(tl.int64) * HID
    dbase = pid.to(tl.int64) * D
    xbase = pid.to(tl.int64) * BB * HID  # this program's [BB, HID] scratch
    gamma, beta = load_inner_norm(lnw_ptr, lnb_ptr, hi, cd, D, HAS_NORM)
    scale, last_scale = load_step_scales(scale_ptr, rows, MB)
    tril = tril_mask(rows)
    last_row = rows == MB - 1
    seq0 = bi.to(tl.int64) * T
    # ∂L/∂b2 after the current mini-batch (∂L/∂(W1, b1, W2) live in dw1/db1/dw2, updated in place)
    db2 = tl.load(db2_fin_ptr + dbase + cd)
    dscale = tl.zeros([BB], tl.float32)
    dgamma = tl.zeros([D], tl.float32)
    dbeta = tl.zeros([D], tl.float32)
    for i in range(NM):
        m = NM - 1 - i
        valid, tok, offs, Q, K, V, lr = load_minibatch(
            q_ptr, k_ptr, v_ptr, lr_ptr, m, P0, T, seq0, H, hi, rows, cd, MB, D
        )
        dO = load_tile(do_ptr, offs, valid)
        pending = (m == 0) & (P0 > 0)
        close = (m + 1) * MB <= P0 + T
        ck = pid.to(tl.int64) * NM + m
        cwbase = ck * D * HID
        chbase = ck * HID
        b2 = tl.load(ck_b2_ptr + ck * D + cd)
        # the sums' cotangents are dS' = sign × (the carried weight gradients when the mini-batch closes, as
        # W' = W − c_b S', else the returned sums' cotangents)
        sign = tl.where(close, -last_scale, 1.0)

        # pass A: the keys through the MLP at the start state; G2 = ∂ℓ/∂Z2k
        Z2k = _keys_forward(K, ck_w1_ptr, ck_b1_ptr, ck_w2_ptr, b2, cwbase, chbase, cd, ch, D, HID, BH, PREC)
        if HAS_NORM:
            G2, xh, rstd, resid, proj = ln_l2_grad_parts(Z2k, V - K, gamma, beta, D, eps)
        else:
            G2 = Z2k - V
        L2 = lr[:, None] * G2
        A1 = tl.dot(Q, tl.trans(K), input_precision=PREC) + 1.0
        E1 = eta(A1, scale, lr, tril)

        # pass B: the queries' forward (Z2q, A2) and X2k dS2' (for dL2)
        Z2q = tl.zeros([BB, D], tl.float32) + b2[None, :]
        A2 = tl.zeros([BB, BB], tl.float32) + 1.0
        XdS2 = tl.zeros([BB, D], tl.float32)
        for h0 in range(0, HID, BH):
            w1_offs, w2_offs = _tile_offsets(h0, cd, ch, D, HID)
            W1t = tl.load(ck_w1_ptr + cwbase + w1_offs)
            b1t = tl.load(ck_b1_ptr + chbase + h0 + ch)
            W2t = tl.load(ck_w2_ptr + cwbase + w2_offs)
            s0w1, s0b1 = sw1_in_ptr + mbase + w1_offs, sb1_in_ptr + hbase + h0 + ch
            s0w2 = sw2_in_ptr + mbase + w2_offs
            Z1k, _, _, _, Z1q = _hidden_tile(Q, K, G2, E1, scale, W1t, b1t, W2t, s0w1, s0b1, pending, PREC)
            X2k = gelu_tanh(Z1k)
            z2, a2 = _layer2_tile(gelu_tanh(Z1q), X2k, scale, W2t, s0w2, pending, PREC)
            Z2q += z2
            A2 += a2
            if close:  # noqa: SIM108 (a branch on a runtime scalar: only one of the loads runs)
                C2 = tl.load(dw2_ptr + mbase + w2_offs)
            else:
                C2 = tl.load(dsw2_fin_ptr + mbase + w2_offs)
            XdS2 += tl.dot(X2k, C2, input_precision=PREC)
        E2 = eta(A2, scale, lr, tril)
        Z2q = Z2q - tl.dot(E2, G2, input_precision=PREC)
        if pending:
            Z2q = Z2q - scale[:, None] * tl.load(sb2_in_ptr + dbase + cd)[None, :]

        # output LayerNorm + residual, layer 2's η, layer 2's sums
        if HAS_NORM:
            dZ2q, dg, db_ = ln_residual_backward(dO, Z2q, gamma, D, eps)
            dgamma += dg
            dbeta += db_
            dQ = dO
        else:
            dZ2q = dO
            dQ = tl.zeros([BB, D], tl.float32)
        dA2, dscale_, dlr = eta_backward(
            tl.where(tril, -tl.dot(dZ2q, tl.trans(G2), input_precision=PREC), 0.0), A2, scale, lr
        )
        dscale += dscale_
        if close:  # noqa: SIM108 (a branch on a runtime scalar: only one side runs)
            c2b = db2
        else:
            c2b = tl.load(dsb2_fin_ptr + dbase + cd)
        XdS2 += c2b[None, :]
        if close:  # ⟨dW2', X2kᵀ L2⟩ + ⟨db2', Σ L2⟩ of dc_b
            dscale -= tl.where(last_row, tl.sum(tl.sum(XdS2 * L2, axis=1), axis=0), 0.0)
        dL2 = sign * XdS2
        dlr += tl.sum(G2 * dL2, axis=1)
        dG2 = lr[:, None] * dL2 - tl.dot(tl.trans(E2), dZ2q, input_precision=PREC)
        dZ2qs = scale[:, None] * dZ2q
        if pending:
            S0b2 = tl.load(sb2_in_ptr + dbase + cd)
            dscale -= tl.sum(dZ2q * S0b2[None, :], axis=1)
            tl.store(dsb2_0_ptr + dbase + cd, sign * c2b - tl.sum(dZ2qs, axis=0))
            if close:
                dscale -= tl.where(last_row, tl.sum(db2 * S0b2, axis=0), 0.0)

        # pass C: per hidden tile, all that does not flow through dZ2k
        dE1 = tl.zeros([BB, BB], tl.float32)
        dK = tl.zeros([BB, D], tl.float32)
        for h0 in range(0, HID, BH):
            w1_offs, w2_offs = _tile_offsets(h0, cd, ch, D, HID)
            W1t = tl.load(ck_w1_ptr + cwbase + w1_offs)
            b1t = tl.load(ck_b1_ptr + chbase + h0 + ch)
            W2t = tl.load(ck_w2_ptr + cwbase + w2_offs)
            Cw1 = tl.load(dw1_ptr + mbase + w1_offs)
            Cb1 = tl.load(db1_ptr + hbase + h0 + ch)
            Cw2 = tl.load(dw2_ptr + mbase + w2_offs)
            s0w1, s0b1 = sw1_in_ptr + mbase + w1_offs, sb1_in_ptr + hbase + h0 + ch
            s0w2 = sw2_in_ptr + mbase + w2_offs
            Z1k, slope, P1, G1, Z1q = _hidden_tile(Q, K, G2, E1, scale, W1t, b1t, W2t, s0w1, s0b1, pending, PREC)
            X2k = gelu_tanh(Z1k)
            X2q = gelu_tanh(Z1q)
            L1 = lr[:, None] * G1
            if close:
                C1 = Cw1
                c1b = Cb1
                C2 = Cw2
            else:
                C1 = tl.load(dsw1_fin_ptr + mbase + w1_offs)
                c1b = tl.load(dsb1_fin_ptr + hbase + h0 + ch)
                C2 = tl.load(dsw2_fin_ptr + mbase + w2_offs)
            # layer 1's sums S1' = S1 + Kᵀ L1, s1' = s1 + Σ L1
            KdS1 = tl.dot(K, C1, input_precision=PREC) + c1b[None, :]
            if close:
                dscale -= tl.where(last_row, tl.sum(tl.sum(KdS1 * L1, axis=1), axis=0), 0.0)
            dL1 = sign * KdS1
            dlr += tl.sum(G1 * dL1, axis=1)
            dK += sign * tl.dot(L1, tl.trans(C1), input_precision=PREC)
            # layer 2 read by the queries: Z2q = X2q W2 − (η ⊙ A2) G2 − c ⊙ X2q S2, A2 = X2q X2kᵀ + 1
            dX2q = tl.dot(dZ2q, tl.trans(W2t), input_precision=PREC) + tl.dot(dA2, X2k, input_precision=PREC)
            if pending:
                S0W2 = tl.load(s0w2)
                R2 = tl.dot(dZ2q, tl.trans(S0W2), input_precision=PREC)
                dX2q = dX2q - scale[:, None] * R2
                dscale -= tl.sum(X2q * R2, axis=1)
                tl.store(dsw2_0_ptr + mbase + w2_offs, sign * C2 - tl.dot(tl.trans(X2q), dZ2qs, input_precision=PREC))
            # layer 1 read by the queries: Z1q = Q W1 + b1 − (η ⊙ A1) G1 − c ⊙ (Q S1 + s1)
            dZ1q = dX2q * gelu_tanh_grad(Z1q)
            dG1 = lr[:, None] * dL1 - tl.dot(tl.trans(E1), dZ1q, input_precision=PREC)
            dE1 -= tl.dot(dZ1q, tl.trans(G1), input_precision=PREC)
            dQ += tl.dot(dZ1q, tl.trans(W1t), input_precision=PREC)
            if pending:
                S0W1 = tl.load(s0w1)
                S0b1 = tl.load(s0b1)
                R1 = tl.dot(dZ1q, tl.trans(S0W1), input_precision=PREC)
                dQ -= scale[:, None] * R1
                dscale -= tl.sum(Q * R1, axis=1) + tl.sum(dZ1q * S0b1[None, :], axis=1)
                dZ1qs = scale[:, None] * dZ1q
                tl.store(dsw1_0_ptr + mbase + w1_offs, sign * C1 - tl.dot(tl.trans(Q), dZ1qs, input_precision=PREC))
                tl.store(dsb1_0_ptr + hbase + h0 + ch, sign * c1b - tl.sum(dZ1qs, axis=0))
                if close:  # ⟨dW', S0⟩ of dc_b
                    S0W2 = tl.load(s0w2)
                    ds0 = tl.sum(tl.sum(Cw1 * S0W1, axis=1), axis=0) + tl.sum(Cb1 * S0b1, axis=0)
                    ds0 += tl.sum(tl.sum(Cw2 * S0W2, axis=1), axis=0)
                    dscale -= tl.where(last_row, ds0, 0.0)
            # G1 = P1 ⊙ gelu'(Z1k), P1 = G2 W2ᵀ
            dP1 = dG1 * slope
            dG2 += tl.dot(dP1, W2t, input_precision=PREC)
            # ∂L/∂Z1k but for the term through dZ2k, kept for pass D: X2k enters A2 and S2' = S2 + X2kᵀ L2
            dX2k = tl.dot(tl.trans(dA2), X2q, input_precision=PREC)
            dX2k += sign * tl.dot(L2, tl.trans(C2), input_precision=PREC)
            dZ1k = dX2k * slope + dG1 * P1 * gelu_tanh_grad2(Z1k)
            tl.store(scratch_ptr + xbase + rows[:, None] * HID + (h0 + ch)[None, :], dZ1k)
            # the weight gradient tiles are overwritten in place: every thread's reads of them come first
            tl.debug_barrier()
            tl.store(dw1_ptr + mbase + w1_offs, Cw1 + tl.dot(tl.trans(Q), dZ1q, input_precision=PREC))
            tl.store(db1_ptr + hbase + h0 + ch, Cb1 + tl.sum(dZ1q, axis=0))
            dW2 = Cw2 + tl.dot(tl.trans(X2q), dZ2q, input_precision=PREC)
            tl.store(dw2_ptr + mbase + w2_offs, dW2 + tl.dot(tl.trans(dP1), G2, input_precision=PREC))

        # layer 1's η; G2 = ∇ℓ(Z2k)
        dA1, dscale_, dlr_ = eta_backward(tl.where(tril, dE1, 0.0), A1, scale, lr)
        dscale += dscale_
        dlr += dlr_
        dQ += tl.dot(dA1, K, input_precision=PREC)
        dK += tl.dot(tl.trans(dA1), Q, input_precision=PREC)
        if HAS_NORM:
            dZ2k, dV, dg, db_ = ln_l2_grad_backward(dG2, xh, rstd, resid, proj, gamma, D)
            dgamma += dg
            dbeta += db_
            dK -= dV  # the target is V − K
        else:
            dZ2k = dG2
            dV = -dG2
        db2 = db2 + tl.sum(dZ2q, axis=0) + tl.sum(dZ2k, axis=0)

        # pass D: the keys' forward Z2k = gelu(K W1 + b1) W2 + b2, reading pass C's stores from other threads
        tl.debug_barrier()
        for h0 in range(0, HID, BH):
            w1_offs, w2_offs = _tile_offsets(h0, cd, ch, D, HID)
            W1t = tl.load(ck_w1_ptr + cwbase + w1_offs)
            b1t = tl.load(ck_b1_ptr + chbase + h0 + ch)
            W2t = tl.load(ck_w2_ptr + cwbase + w2_offs)
            Z1k = tl.dot(K, W1t, input_precision=PREC) + b1t[None, :]
            dX2k = tl.dot(dZ2k, tl.trans(W2t), input_precision=PREC)
            dZ1k = tl.load(scratch_ptr + xbase + rows[:, None] * HID + (h0 + ch)[None, :])
            dZ1k += dX2k * gelu_tanh_grad(Z1k)
            dK += tl.dot(dZ1k, tl.trans(W1t), input_precision=PREC)
            dW1 = tl.load(dw1_ptr + mbase + w1_offs) + tl.dot(tl.trans(K), dZ1k, input_precision=PREC)
            tl.store(dw1_ptr + mbase + w1_offs, dW1)
            tl.store(db1_ptr + hbase + h0 + ch, tl.load(db1_ptr + hbase + h0 + ch) + tl.sum(dZ1k, axis=0))
            dW2 = tl.load(dw2_ptr + mbase + w2_offs)
            tl.store(dw2_ptr + mbase + w2_offs, dW2 + tl.dot(tl.trans(gelu_tanh(Z1k)), dZ2k, input_precision=PREC))

        tl.store(dq_ptr + offs, dQ.to(dq_ptr.dtype.element_ty), mask=valid[:, None])
        tl.store(dk_ptr + offs, dK.to(dk_ptr.dtype.element_ty), mask=valid[:, None])
        tl.store(dv_ptr + offs, dV.to(dv_ptr.dtype.element_ty), mask=valid[:, None])
        tl.store(dlr_ptr + tok, dlr.to(dlr_ptr.dtype.element_ty), mask=valid)
        # the previous mini-batch reads the weight gradients (and overwrites the scratch) written above
        tl.debug_barrier()
    tl.store(db2_ptr + dbase + cd, db2)
    tl.store(dscale_ptr + pid.to(tl.int64) * BB + rows, dscale)
    if HAS_NORM:
        tl.store(dlnw_ptr + dbase + cd, dgamma)
        tl.store(dlnb_ptr + dbase + cd, dbeta)


@triton.jit
def _mlp_step_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lr_ptr,
    out_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    sw1_ptr,
    sb1_ptr,
    sw2_ptr,
    sb2_ptr,
    w1_out_ptr,
    b1_out_ptr,
    w2_out_ptr,
    b2_out_ptr,
    sw1_out_ptr,
    sb1_out_ptr,
    sw2_out_ptr,
    sb2_out_ptr,
    scale_ptr,
    lnw_ptr,
    lnb_ptr,
    H,
    POS,
    eps,
    D: tl.constexpr,
    HID: tl.constexpr,
    BH: tl.constexpr,
    HAS_NORM: tl.constexpr,
    PENDING: tl.constexpr,
    CLOSE: tl.constexpr,
):
    pid = tl.program_id(0)
    hi = pid % H
    cd = tl.arange(0, D)
    ch = tl.arange(0, BH)
    mbase = pid.to(tl.int64) * D * HID
    hbase = pid.to(tl.int64) * HID
    dbase = pid.to(tl.int64) * D  # one token: (batch, 1, head) flattens to the program id
    q_row = tl.load(q_ptr + dbase + cd).to(tl.float32)[None, :]
    q_col = tl.load(q_ptr + dbase + cd).to(tl.float32)[:, None]
    k_row = tl.load(k_ptr + dbase + cd).to(tl.float32)[None, :]
    k_col = tl.load(k_ptr + dbase + cd).to(tl.float32)[:, None]
    v_row = tl.load(v_ptr + dbase + cd).to(tl.float32)[None, :]
    lr = tl.load(lr_ptr + pid).to(tl.float32)
    scale = tl.load(scale_ptr + POS)
    b2 = tl.load(b2_ptr + dbase + cd)

    z2k = tl.zeros([1, D], tl.float32) + b2[None, :]
    for h0 in range(0, HID, BH):
        W1t = tl.load(w1_ptr + mbase + cd[:, None] * HID + (h0 + ch)[None, :])
        b1t = tl.load(b1_ptr + hbase + h0 + ch)
        W2t = tl.load(w2_ptr + mbase + (h0 + ch)[:, None] * D + cd[None, :])
        x2k = gelu_tanh(tl.sum(k_col * W1t, axis=0) + b1t)
        z2k += tl.sum(x2k[:, None] * W2t, axis=0)[None, :]
    if HAS_NORM:
        gamma = tl.load(lnw_ptr + hi * D + cd).to(tl.float32)
        beta = tl.load(lnb_ptr + hi * D + cd).to(tl.float32)
        G2 = ln_l2_grad(z2k, v_row - k_row, gamma, beta, D, eps)
    else:
        G2 = z2k - v_row
    lrG2 = lr * G2  # [1, D]

    z2q = tl.zeros([1, D], tl.float32)
    for h0 in range(0, HID, BH):
        w1_offs = cd[:, None] * HID + (h0 + ch)[None, :]
        w2_offs = (h0 + ch)[:, None] * D + cd[None, :]
        W1t = tl.load(w1_ptr + mbase + w1_offs)
        b1t = tl.load(b1_ptr + hbase + h0 + ch)
        W2t = tl.load(w2_ptr + mbase + w2_offs)
        z1k = tl.sum(k_col * W1t, axis=0) + b1t  # [BH]
        x2k = gelu_tanh(z1k)
        lrG1 = lr * tl.sum(W2t * G2, axis=1) * gelu_tanh_grad(z1k)  # [BH]
        SW1 = k_col * lrG1[None, :]
        Sb1 = lrG1
        SW2 = x2k[:, None] * lrG2
        if PENDING:
            SW1 += tl.load(sw1_ptr + mbase + w1_offs)
            Sb1 += tl.load(sb1_ptr + hbase + h0 + ch)
            SW2 += tl.load(sw2_ptr + mbase + w2_offs)
        W1i = W1t - scale * SW1
        b1i = b1t - scale * Sb1
        W2i = W2t - scale * SW2
        x2q = gelu_tanh(tl.sum(q_col * W1i, axis=0) + b1i)
        z2q += tl.sum(x2q[:, None] * W2i, axis=0)[None, :]
        if CLOSE:
            tl.store(w1_out_ptr + mbase + w1_offs, W1i.to(w1_out_ptr.dtype.element_ty))
            tl.store(b1_out_ptr + hbase + h0 + ch, b1i.to(b1_out_ptr.dtype.element_ty))
            tl.store(w2_out_ptr + mbase + w2_offs, W2i.to(w2_out_ptr.dtype.element_ty))
        else:
            tl.store(sw1_out_ptr + mbase + w1_offs, SW1.to(sw1_out_ptr.dtype.element_ty))
            tl.store(sb1_out_ptr + hbase + h0 + ch, Sb1.to(sb1_out_ptr.dtype.element_ty))
            tl.store(sw2_out_ptr + mbase + w2_offs, SW2.to(sw2_out_ptr.dtype.element_ty))
    Sb2 = tl.sum(lrG2, axis=0)
    if PENDING:
        Sb2 += tl.load(sb2_ptr + dbase + cd)
    b2i = b2 - scale * Sb2
    z2q += b2i[None, :]
    if HAS_NORM:
        z2q = ln_residual(q_row, z2q, gamma, beta, D, eps)
    tl.store(out_ptr + dbase + cd[None, :], z2q.to(out_ptr.dtype.element_ty))
    if CLOSE:
        tl.store(b2_out_ptr + dbase + cd, b2i.to(b2_out_ptr.dtype.element_ty))
    else:
        tl.store(sb2_out_ptr + dbase + cd, Sb2.to(sb2_out_ptr.dtype.element_ty))


# ---------------------------------------------------------------------------------------------------- host side


def hidden_block(hidden: int, head_dim: int) -> int:
    """Columns of a hidden tile: the largest power of two <= 64 (32 at d = 128) that divides ``hidden``."""
    cap = 64 if head_dim <= 64 else 32
    block = 16
    while block * 2 <= cap and hidden % (block * 2) == 0:
        block *= 2
    return block


class _Setup:
    """Shapes and launch settings of one call."""

    def __init__(self, q: Tensor, hidden: int, mini_batch_size: int, position: int, has_norm: bool, eps: float):
        self.batch, self.seq, self.heads, self.d = q.shape
        self.hidden, self.bh = hidden, hidden_block(hidden, self.d)
        self.mb, self.position, self.eps, self.has_norm = mini_batch_size, position, eps, has_norm
        self.n_mb = num_minibatches(self.seq, position, mini_batch_size)
        self.bb = row_block(mini_batch_size)
        self.prec = dot_precision(q.dtype)
        self.warps = 8 if self.d >= 64 else 4
        # multi-buffered weight-tile loads cost shared memory: 125 KB at d = 64 with 3 stages, 61 KB with 1
        self.stages = 2 if self.d <= 32 else 1
        self.grid = (self.batch * self.heads,)

    @property
    def final_position(self) -> int:
        return (self.position + self.seq) % self.mb


def _flat(t: Tensor) -> Tensor:
    """float32 contiguous; vectors (B, H, 1, n) as (B, H, n)."""
    return fp32(t.squeeze(-2) if t.dim() == 4 and t.shape[-2] == 1 else t)


def _workspace(t: Tensor) -> Tensor:
    """A fresh float32 contiguous copy the kernel may overwrite."""
    t = t.squeeze(-2) if t.dim() == 4 and t.shape[-2] == 1 else t
    return torch.empty(t.shape, dtype=torch.float32, device=t.device).copy_(t)


def _forward(
    s: _Setup,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    scale: Tensor,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    weights: tuple[Tensor, ...],
    sums: tuple[Tensor, ...],
    save: bool,
) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor] | None, list[Tensor] | None]:
    """Launch the forward kernel. Returns z, the final weights and sums (float32, vectors flat), the float32
    initial sums and the checkpoints (or None)."""
    w1, b1, w2 = (_workspace(w) for w in weights[:3])
    b2 = _flat(weights[3])
    b2_out = torch.empty_like(b2)
    sums_in = [_flat(x) for x in sums]
    sums_out = [torch.zeros_like(x) for x in sums_in]
    out = torch.empty_like(q)
    ck = None
    if save:
        shapes = ((s.d, s.hidden), (s.hidden,), (s.hidden, s.d), (s.d,))
        ck = [w1.new_empty(s.batch, s.heads, s.n_mb, *shape) for shape in shapes]
    dummy = b2
    _mlp_fwd_kernel[s.grid](
        q,
        k,
        v,
        lr,
        out,
        w1,
        b1,
        w2,
        b2,
        b2_out,
        *sums_in,
        *sums_out,
        *(ck if ck is not None else (dummy,) * 4),
        scale,
        ln_w if ln_w is not None else dummy,
        ln_b if ln_b is not None else dummy,
        s.seq,
        s.heads,
        s.position,
        s.n_mb,
        s.eps,
        D=s.d,
        HID=s.hidden,
        BH=s.bh,
        MB=s.mb,
        BB=s.bb,
        HAS_NORM=s.has_norm,
        SAVE=save,
        PREC=s.prec,
        num_warps=s.warps,
        num_stages=s.stages,
    )
    return out, [w1, b1, w2, b2_out], sums_out, sums_in, ck


def _unflat(flat: list[Tensor]) -> tuple[Tensor, ...]:
    """(W1, b1, W2, b2) with the vectors back as (B, H, 1, n)."""
    w1, b1, w2, b2 = flat
    return w1, b1.unsqueeze(-2), w2, b2.unsqueeze(-2)


def _as_state(flat: list[Tensor], dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(W1, b1, W2, b2) with the vectors back as (B, H, 1, n), in ``dtype``."""
    return tuple(t.to(dtype) for t in _unflat(flat))


def _backward(
    s: _Setup, saved: tuple[Tensor | None, ...], dz: Tensor, grads: tuple[Tensor, ...]
) -> tuple[list[Tensor], Tensor, tuple[Tensor | None, Tensor | None], list[Tensor], list[Tensor]]:
    """Launch the backward kernel.

    saved: (q, k, v, lr, scale, ln_w, ln_b, the 4 float32 initial sums, the 4 checkpoints (B, H, n_mb, ...)) as
    the forward saved them; dz: ∂L/∂z (B, T, H, d); grads: ∂L/∂ the final (W1, b1, W2, b2) and sums.
    Returns float32 [dq, dk, dv, dlr], ∂L/∂scale (b,), (∂L/∂ln_weight, ∂L/∂ln_bias) or Nones, and float32
    ∂L/∂ the initial weights and sums (vectors flat: (B, H, n)).
    """
    q, k, v, lr, scale, ln_w, ln_b, *rest = saved
    sums_in, ck = rest[:4], rest[4:]
    f32 = torch.float32
    dq, dk, dv = (torch.empty(q.shape, dtype=f32, device=q.device) for _ in range(3))
    dlr = torch.empty(lr.shape, dtype=f32, device=q.device)
    # ∂L/∂(W1, b1, W2) of the final state, turned into those of the initial state in place by the kernel
    dw1, db1, dw2 = (_workspace(g) for g in grads[:3])
    db2_fin = _flat(grads[3])
    db2 = torch.empty_like(db2_fin)
    dsums_fin = [_flat(g) for g in grads[4:]]
    dsums0 = [torch.zeros_like(x) for x in dsums_fin]
    dscale = torch.zeros(s.batch, s.heads, s.bb, dtype=f32, device=q.device)
    dlnw = dlnb = None
    if ln_w is not None:
        dlnw = torch.zeros(s.batch, s.heads, s.d, dtype=f32, device=q.device)
        dlnb = torch.zeros_like(dlnw)
    # pass C -> pass D hand-over: the partial ∂L/∂(K W1 + b1) of one mini-batch per program
    scratch = torch.empty(s.batch * s.heads * s.bb * s.hidden, dtype=f32, device=q.device)
    dummy = db2
    _mlp_bwd_kernel[s.grid](
        q,
        k,
        v,
        lr,
        dz.contiguous(),
        *ck,
        *sums_in,
        *dsums_fin,
        db2_fin,
        scale,
        ln_w if ln_w is not None else dummy,
        ln_b if ln_b is not None else dummy,
        dq,
        dk,
        dv,
        dlr,
        dw1,
        db1,
        dw2,
        db2,
        *dsums0,
        dscale,
        dlnw if dlnw is not None else dummy,
        dlnb if dlnb is not None else dummy,
        scratch,
        s.seq,
        s.heads,
        s.position,
        s.n_mb,
        s.eps,
        D=s.d,
        HID=s.hidden,
        BH=s.bh,
        MB=s.mb,
        BB=s.bb,
        HAS_NORM=s.has_norm,
        PREC=s.prec,
        num_warps=s.warps,
        num_stages=1,
    )
    d_scale = dscale.sum(dim=(0, 1))[: s.mb]
    d_ln = (None, None) if dlnw is None else (dlnw.sum(0).to(ln_w.dtype), dlnb.sum(0).to(ln_b.dtype))
    return [dq, dk, dv, dlr], d_scale, d_ln, [dw1, db1, dw2, db2], dsums0


class _TritonMLP(torch.autograd.Function):
    """Differentiable wrapper: forward saves one state per mini-batch, backward runs ``_mlp_bwd_kernel``."""

    @staticmethod
    def forward(ctx, q, k, v, lr, scale, ln_w, ln_b, w1, b1, w2, b2, sw1, sb1, sw2, sb2, s):  # type: ignore[override]
        weights, sums = (w1, b1, w2, b2), (sw1, sb1, sw2, sb2)
        out, final_w, final_s, sums_in, ck = _forward(s, q, k, v, lr, scale, ln_w, ln_b, weights, sums, save=True)
        ctx.setup = s
        ctx.dtypes = tuple(w.dtype for w in weights)
        ctx.save_for_backward(q, k, v, lr, scale, ln_w, ln_b, *sums_in, *ck)
        return out, *_as_state(final_w, q.dtype), *_as_state(final_s, q.dtype)

    @staticmethod
    def backward(ctx, dz, *grads):  # type: ignore[override]
        s: _Setup = ctx.setup
        d_in, d_scale, d_ln, d_w, d_s = _backward(s, ctx.saved_tensors, dz, grads)
        dtype = ctx.saved_tensors[0].dtype
        d_in = (g.to(dtype) for g in d_in)
        d_w = tuple(g.to(t) for g, t in zip(_unflat(d_w), ctx.dtypes, strict=True))
        # the initial sums are not read when no mini-batch is open
        d_s = (None,) * 4 if s.position == 0 else _as_state(d_s, dtype)
        return (*d_in, d_scale, *d_ln, *d_w, *d_s, None)


def _step(
    s: _Setup,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    scale: Tensor,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    state: TTTState,
) -> tuple[Tensor, TTTState]:
    """One token through ``_mlp_step_kernel``; no autograd."""
    close = s.position == s.mb - 1
    weights = [_flat(w) for w in state.weights]
    sums = [_flat(x) for x in state.grad_sums]
    news = [torch.empty(w.shape, dtype=q.dtype, device=q.device) for w in weights]
    out = torch.empty_like(q)
    _mlp_step_kernel[s.grid](
        q,
        k,
        v,
        lr,
        out,
        *weights,
        *sums,
        *news,  # written when the mini-batch closes (new weights) ...
        *news,  # ... else the new sums
        scale,
        ln_w if ln_w is not None else out,
        ln_b if ln_b is not None else out,
        s.heads,
        s.position,
        s.eps,
        D=s.d,
        HID=s.hidden,
        BH=s.bh,
        HAS_NORM=s.has_norm,
        PENDING=s.position > 0,
        CLOSE=close,
        num_warps=s.warps,
    )
    news = tuple(t.unsqueeze(-2) if t.dim() == 3 else t for t in news)
    if close:
        return out, TTTState(news, tuple(torch.zeros_like(x) for x in news), 0)
    return out, TTTState(state.weights, news, s.position + 1)


def triton_mlp(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    inner: tuple[Tensor, ...],
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    token_offset: Tensor,
    initial_state: TTTState | None,
    eps: float,
) -> tuple[Tensor, TTTState]:
    """``ttt_mlp(..., form="triton")`` (arguments already validated by the op; ``token_offset`` (b,) gives the
    mini-batch size b). Returns (z, TTTState)."""
    check_launchable(q)
    state = initial_state if initial_state is not None else TTTState.initial(inner, q.shape[0])
    hidden = state.weights[0].shape[-1]
    s = _Setup(q, hidden, token_offset.shape[0], state.position, ln_weight is not None, eps)  # b = len(offsets)
    scale = token_scales(token_offset.to(torch.float32)).contiguous()
    q, k, v, lr = (x.contiguous() for x in (q, k, v, lr))
    ln_w = None if ln_weight is None else ln_weight.contiguous()
    ln_b = None if ln_bias is None else ln_bias.contiguous()
    tensors = (q, k, v, lr, scale, ln_w, ln_b, *state.weights, *state.grad_sums)
    if needs_grad(*tensors):
        z, *rest = _TritonMLP.apply(*tensors, s)
        return z, TTTState(tuple(rest[:4]), tuple(rest[4:]), s.final_position)
    if s.seq == 1:
        return _step(s, q, k, v, lr, scale, ln_w, ln_b, state)
    z, final_w, final_s, _, _ = _forward(s, q, k, v, lr, scale, ln_w, ln_b, state.weights, state.grad_sums, False)
    return z, TTTState(_as_state(final_w, q.dtype), _as_state(final_s, q.dtype), s.final_position)
