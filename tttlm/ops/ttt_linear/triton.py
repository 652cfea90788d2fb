"""TTT-Linear, ``form="triton"``: fused Triton kernels (forward, backward, decode step).

Imported lazily through ``tttlm.ops.kernel_forms`` (this module imports triton). Three kernels, each one program
per (batch, head) with the inner state W (d × d) and b (d) held on chip in float32 for the whole walk:

- ``_linear_fwd_kernel`` walks the mini-batches of the sequence. Per mini-batch (a [BB, d] tile of q, k, v):
  key-side forward ``K W + b``, the fused LayerNorm-L2 gradient G, ``η = tril(scale_i lr_j (q_i·k_j + 1))``,
  the dual-form outputs ``Z = Q W + b − η G`` (minus the pending sums of a mini-batch opened by an earlier
  call), output LayerNorm + residual, and the update ``W −= scale_b Kᵀ(lr ⊙ G)`` when the mini-batch closes
  (else the sums are returned as the open state). With ``SAVE`` it stores W at the start of every mini-batch
  (n_mb × d² floats per (batch, head)), all the backward needs.
- ``_linear_bwd_kernel`` walks the mini-batches last to first carrying ∂L/∂W; each mini-batch is recomputed
  from its saved start state and differentiated by hand (LayerNorm-L2 gradient backward included), giving
  ∂L/∂(q, k, v, lr) for its tokens, partial sums for the step scales and the inner LayerNorm, and ∂L/∂W_s.
- ``_linear_step_kernel``: one decode token. Adds ``k ⊗ lr G`` to the pending sums, reads
  ``W_s − scale_i S``, writes the output (LayerNorm + residual fused); at the last position of the mini-batch
  the read weights become the new state.
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
    num_warps,
    row_block,
    tril_mask,
)


@triton.jit
def _linear_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lr_ptr,
    out_ptr,
    w_ptr,
    b_ptr,
    sw_in_ptr,
    sb_in_ptr,
    w_out_ptr,
    b_out_ptr,
    sw_out_ptr,
    sb_out_ptr,
    ckw_ptr,
    ckb_ptr,
    scale_ptr,
    lnw_ptr,
    lnb_ptr,
    T,
    H,
    P0,
    NM,
    eps,
    D: tl.constexpr,
    MB: tl.constexpr,
    BB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_NORM: tl.constexpr,
    SAVE: tl.constexpr,
    PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    rows = tl.arange(0, BB)
    cols = tl.arange(0, D)
    mat = cols[:, None] * D + cols[None, :]
    sbase = pid.to(tl.int64) * D * D
    vbase = pid.to(tl.int64) * D
    W = tl.load(w_ptr + sbase + mat)
    bias = tl.zeros([D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + vbase + cols)
    gamma, beta = load_inner_norm(lnw_ptr, lnb_ptr, hi, cols, D, HAS_NORM)
    scale, last_scale = load_step_scales(scale_ptr, rows, MB)
    tril = tril_mask(rows)
    seq0 = bi.to(tl.int64) * T
    for m in range(NM):
        valid, _tok, offs, Q, K, V, lr = load_minibatch(
            q_ptr, k_ptr, v_ptr, lr_ptr, m, P0, T, seq0, H, hi, rows, cols, MB, D
        )
        if SAVE:
            tl.store(ckw_ptr + (pid.to(tl.int64) * NM + m) * D * D + mat, W)
            if HAS_BIAS:
                tl.store(ckb_ptr + (pid.to(tl.int64) * NM + m) * D + cols, bias)
        Zk = tl.dot(K, W, input_precision=PREC) + bias[None, :]
        if HAS_NORM:  # noqa: SIM108 (constexpr branch: only one side is compiled)
            G = ln_l2_grad(Zk, V - K, gamma, beta, D, eps)
        else:
            G = Zk - V
        A = tl.dot(Q, tl.trans(K), input_precision=PREC)
        if HAS_BIAS:
            A = A + 1.0
        E = eta(A, scale, lr, tril)
        Z = tl.dot(Q, W, input_precision=PREC) + bias[None, :] - tl.dot(E, G, input_precision=PREC)
        L = lr[:, None] * G
        SW = tl.dot(tl.trans(K), L, input_precision=PREC)
        Sb = tl.sum(L, axis=0)
        if (m == 0) & (P0 > 0):  # sums pending from the call that opened this mini-batch
            SW0 = tl.load(sw_in_ptr + sbase + mat)
            Z = Z - scale[:, None] * tl.dot(Q, SW0, input_precision=PREC)
            SW = SW + SW0
            if HAS_BIAS:
                Sb0 = tl.load(sb_in_ptr + vbase + cols)
                Z = Z - scale[:, None] * Sb0[None, :]
                Sb = Sb + Sb0
        if (m + 1) * MB <= P0 + T:
            W = W - last_scale * SW
            if HAS_BIAS:
                bias = bias - last_scale * Sb
        else:  # the stream ends inside this mini-batch: return its sums as the open state
            tl.store(sw_out_ptr + sbase + mat, SW)
            if HAS_BIAS:
                tl.store(sb_out_ptr + vbase + cols, Sb)
        if HAS_NORM:
            Z = ln_residual(Q, Z, gamma, beta, D, eps)
        tl.store(out_ptr + offs, Z.to(out_ptr.dtype.element_ty), mask=valid[:, None])
    tl.store(w_out_ptr + sbase + mat, W)
    if HAS_BIAS:
        tl.store(b_out_ptr + vbase + cols, bias)


@triton.jit
def _linear_bwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lr_ptr,
    do_ptr,
    ckw_ptr,
    ckb_ptr,
    sw_in_ptr,
    sb_in_ptr,
    dw_fin_ptr,
    db_fin_ptr,
    dsw_fin_ptr,
    dsb_fin_ptr,
    scale_ptr,
    lnw_ptr,
    lnb_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    dlr_ptr,
    dw0_ptr,
    db0_ptr,
    dsw0_ptr,
    dsb0_ptr,
    dscale_ptr,
    dlnw_ptr,
    dlnb_ptr,
    T,
    H,
    P0,
    NM,
    eps,
    D: tl.constexpr,
    MB: tl.constexpr,
    BB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_NORM: tl.constexpr,
    PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    rows = tl.arange(0, BB)
    cols = tl.arange(0, D)
    mat = cols[:, None] * D + cols[None, :]
    sbase = pid.to(tl.int64) * D * D
    vbase = pid.to(tl.int64) * D
    gamma, beta = load_inner_norm(lnw_ptr, lnb_ptr, hi, cols, D, HAS_NORM)
    scale, last_scale = load_step_scales(scale_ptr, rows, MB)
    tril = tril_mask(rows)
    seq0 = bi.to(tl.int64) * T
    # ∂L/∂(state after the current mini-batch), carried backwards
    dW = tl.load(dw_fin_ptr + sbase + mat)
    db = tl.zeros([D], tl.float32)
    if HAS_BIAS:
        db = tl.load(db_fin_ptr + vbase + cols)
    dscale = tl.zeros([BB], tl.float32)
    dgamma = tl.zeros([D], tl.float32)
    dbeta = tl.zeros([D], tl.float32)
    for i in range(NM):
        m = NM - 1 - i
        valid, tok, offs, Q, K, V, lr = load_minibatch(
            q_ptr, k_ptr, v_ptr, lr_ptr, m, P0, T, seq0, H, hi, rows, cols, MB, D
        )
        dO = load_tile(do_ptr, offs, valid)
        W = tl.load(ckw_ptr + (pid.to(tl.int64) * NM + m) * D * D + mat)
        bias = tl.zeros([D], tl.float32)
        if HAS_BIAS:
            bias = tl.load(ckb_ptr + (pid.to(tl.int64) * NM + m) * D + cols)
        pending = (m == 0) & (P0 > 0)
        close = (m + 1) * MB <= P0 + T

        # recompute the mini-batch's forward
        Zk = tl.dot(K, W, input_precision=PREC) + bias[None, :]
        if HAS_NORM:
            G, xh, rstd, resid, proj = ln_l2_grad_parts(Zk, V - K, gamma, beta, D, eps)
        else:
            G = Zk - V
        A = tl.dot(Q, tl.trans(K), input_precision=PREC)
        if HAS_BIAS:
            A = A + 1.0
        E = eta(A, scale, lr, tril)
        Z = tl.dot(Q, W, input_precision=PREC) + bias[None, :] - tl.dot(E, G, input_precision=PREC)
        if pending:
            Z = Z - scale[:, None] * tl.dot(Q, tl.load(sw_in_ptr + sbase + mat), input_precision=PREC)
            if HAS_BIAS:
                Z = Z - scale[:, None] * tl.load(sb_in_ptr + vbase + cols)[None, :]
        L = lr[:, None] * G

        # state update: W' = W − scale_b (S0 + Kᵀ L) when the mini-batch closes, else (W, S0 + Kᵀ L) returned
        if close:
            KdW = tl.dot(K, dW, input_precision=PREC)
            dL = -last_scale * (KdW + db[None, :])
            dK = -last_scale * tl.dot(L, tl.trans(dW), input_precision=PREC)
            dlast = tl.sum(tl.sum(KdW * L, axis=1), axis=0)
            if HAS_BIAS:
                dlast += tl.sum(db * tl.sum(L, axis=0), axis=0)
            dscale = dscale - tl.where(rows == MB - 1, dlast, 0.0)
            dSW = -last_scale * dW
            dSb = -last_scale * db
        else:
            dSW = tl.load(dsw_fin_ptr + sbase + mat)
            dSb = tl.zeros([D], tl.float32)
            if HAS_BIAS:
                dSb = tl.load(dsb_fin_ptr + vbase + cols)
            dL = tl.dot(K, dSW, input_precision=PREC) + dSb[None, :]
            dK = tl.dot(L, tl.trans(dSW), input_precision=PREC)

        # output LayerNorm + residual
        if HAS_NORM:
            dZ, dg, db_ = ln_residual_backward(dO, Z, gamma, D, eps)
            dgamma += dg
            dbeta += db_
            dQ = dO
        else:
            dZ = dO
            dQ = tl.zeros([BB, D], tl.float32)

        # Z = Q W + b − E G − scale (Q S0 + s0)
        dQ += tl.dot(dZ, tl.trans(W), input_precision=PREC)
        dWm = dW + tl.dot(tl.trans(Q), dZ, input_precision=PREC)
        dbm = db + tl.sum(dZ, axis=0)
        dE = tl.where(tril, -tl.dot(dZ, tl.trans(G), input_precision=PREC), 0.0)
        dG = lr[:, None] * dL - tl.dot(tl.trans(E), dZ, input_precision=PREC)
        if pending:
            SW0 = tl.load(sw_in_ptr + sbase + mat)
            Pq = tl.dot(Q, SW0, input_precision=PREC)
            if HAS_BIAS:
                Sb0 = tl.load(sb_in_ptr + vbase + cols)
                Pq = Pq + Sb0[None, :]
            dscale -= tl.sum(dZ * Pq, axis=1)
            dZs = scale[:, None] * dZ
            dQ -= tl.dot(dZs, tl.trans(SW0), input_precision=PREC)
            tl.store(dsw0_ptr + sbase + mat, dSW - tl.dot(tl.trans(Q), dZs, input_precision=PREC))
            if HAS_BIAS:
                tl.store(dsb0_ptr + vbase + cols, dSb - tl.sum(dZs, axis=0))
            if close:
                dlast0 = tl.sum(tl.sum(dW * SW0, axis=1), axis=0)
                if HAS_BIAS:
                    dlast0 += tl.sum(db * Sb0, axis=0)
                dscale = dscale - tl.where(rows == MB - 1, dlast0, 0.0)

        # E = tril(scale_i A_ij lr_j), A = Q Kᵀ (+ 1)
        dA, ds_, dlr = eta_backward(dE, A, scale, lr)
        dscale += ds_
        dlr += tl.sum(G * dL, axis=1)
        dQ += tl.dot(dA, K, input_precision=PREC)
        dK += tl.dot(tl.trans(dA), Q, input_precision=PREC)

        # G = LN-L2 gradient at Zk (target V − K)
        if HAS_NORM:
            dZk, dV, dg, db_ = ln_l2_grad_backward(dG, xh, rstd, resid, proj, gamma, D)
            dgamma += dg
            dbeta += db_
            dK -= dV  # the target is V − K
        else:
            dZk = dG
            dV = -dG

        # Zk = K W + b
        dK += tl.dot(dZk, tl.trans(W), input_precision=PREC)
        dWm += tl.dot(tl.trans(K), dZk, input_precision=PREC)
        dbm += tl.sum(dZk, axis=0)

        tl.store(dq_ptr + offs, dQ.to(dq_ptr.dtype.element_ty), mask=valid[:, None])
        tl.store(dk_ptr + offs, dK.to(dk_ptr.dtype.element_ty), mask=valid[:, None])
        tl.store(dv_ptr + offs, dV.to(dv_ptr.dtype.element_ty), mask=valid[:, None])
        tl.store(dlr_ptr + tok, dlr.to(dlr_ptr.dtype.element_ty), mask=valid)
        dW = dWm
        if HAS_BIAS:
            db = dbm
    tl.store(dw0_ptr + sbase + mat, dW)
    if HAS_BIAS:
        tl.store(db0_ptr + vbase + cols, db)
    tl.store(dscale_ptr + pid.to(tl.int64) * BB + rows, dscale)
    if HAS_NORM:
        tl.store(dlnw_ptr + vbase + cols, dgamma)
        tl.store(dlnb_ptr + vbase + cols, dbeta)


@triton.jit
def _linear_step_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lr_ptr,
    out_ptr,
    w_ptr,
    b_ptr,
    sw_ptr,
    sb_ptr,
    w_out_ptr,
    b_out_ptr,
    sw_out_ptr,
    sb_out_ptr,
    scale_ptr,
    lnw_ptr,
    lnb_ptr,
    H,
    POS,
    eps,
    D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_NORM: tl.constexpr,
    PENDING: tl.constexpr,
    CLOSE: tl.constexpr,
):
    pid = tl.program_id(0)
    hi = pid % H
    cols = tl.arange(0, D)
    mat = cols[:, None] * D + cols[None, :]
    sbase = pid.to(tl.int64) * D * D
    vbase = pid.to(tl.int64) * D  # one token: (batch, 1, head) flattens to the program id
    q_row = tl.load(q_ptr + vbase + cols).to(tl.float32)[None, :]
    q_col = tl.load(q_ptr + vbase + cols).to(tl.float32)[:, None]
    k_row = tl.load(k_ptr + vbase + cols).to(tl.float32)[None, :]
    k_col = tl.load(k_ptr + vbase + cols).to(tl.float32)[:, None]
    v_row = tl.load(v_ptr + vbase + cols).to(tl.float32)[None, :]
    lr = tl.load(lr_ptr + pid).to(tl.float32)
    W = tl.load(w_ptr + sbase + mat)
    bias = tl.zeros([D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + vbase + cols)
    SW = tl.zeros([D, D], tl.float32)
    Sb = tl.zeros([D], tl.float32)
    if PENDING:
        SW = tl.load(sw_ptr + sbase + mat)
        if HAS_BIAS:
            Sb = tl.load(sb_ptr + vbase + cols)
    zk = tl.sum(k_col * W, axis=0)[None, :] + bias[None, :]
    if HAS_NORM:
        gamma = tl.load(lnw_ptr + hi * D + cols).to(tl.float32)
        beta = tl.load(lnb_ptr + hi * D + cols).to(tl.float32)
        G = ln_l2_grad(zk, v_row - k_row, gamma, beta, D, eps)
    else:
        G = zk - v_row
    lrG = lr * G
    SW = SW + k_col * lrG
    if HAS_BIAS:
        Sb = Sb + tl.sum(lrG, axis=0)
    scale = tl.load(scale_ptr + POS)
    Wi = W - scale * SW
    bi = bias - scale * Sb
    z = tl.sum(q_col * Wi, axis=0)[None, :] + bi[None, :]
    if HAS_NORM:
        z = ln_residual(q_row, z, gamma, beta, D, eps)
    tl.store(out_ptr + vbase + cols[None, :], z.to(out_ptr.dtype.element_ty))
    if CLOSE:
        tl.store(w_out_ptr + sbase + mat, Wi.to(w_out_ptr.dtype.element_ty))
        if HAS_BIAS:
            tl.store(b_out_ptr + vbase + cols, bi.to(b_out_ptr.dtype.element_ty))
    else:
        tl.store(sw_out_ptr + sbase + mat, SW.to(sw_out_ptr.dtype.element_ty))
        if HAS_BIAS:
            tl.store(sb_out_ptr + vbase + cols, Sb.to(sb_out_ptr.dtype.element_ty))


# ---------------------------------------------------------------------------------------------------- host side


class _Setup:
    """Shapes and launch settings of one call."""

    def __init__(self, q: Tensor, mini_batch_size: int, position: int, has_bias: bool, has_norm: bool, eps: float):
        self.batch, self.seq, self.heads, self.d = q.shape
        self.mb, self.position, self.eps = mini_batch_size, position, eps
        self.has_bias, self.has_norm = has_bias, has_norm
        self.n_mb = num_minibatches(self.seq, position, mini_batch_size)
        self.bb = row_block(mini_batch_size)
        self.prec = dot_precision(q.dtype)
        self.warps = num_warps(self.d)
        self.grid = (self.batch * self.heads,)

    @property
    def final_position(self) -> int:
        return (self.position + self.seq) % self.mb


def _flat_state(state: TTTState, has_bias: bool) -> list[Tensor | None]:
    """float32 contiguous (W, b, S_W, S_b) with b / S_b as (B, H, d), or None without a bias."""
    w, sw = fp32(state.weights[0]), fp32(state.grad_sums[0])
    if not has_bias:
        return [w, None, sw, None]
    return [w, fp32(state.weights[1].squeeze(-2)), sw, fp32(state.grad_sums[1].squeeze(-2))]


def _forward(
    s: _Setup,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    scale: Tensor,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    state: list[Tensor | None],
    save: bool,
) -> tuple[Tensor, list[Tensor | None], list[Tensor | None]]:
    """Launch the forward kernel. Returns z, the final (W, b, S_W, S_b) in float32 and the checkpoints."""
    w0, b0, sw0, sb0 = state
    out = torch.empty_like(q)
    w_out = torch.empty_like(w0)
    b_out = None if b0 is None else torch.empty_like(b0)
    sw_out = torch.zeros_like(w0)
    sb_out = None if b0 is None else torch.zeros_like(b0)
    ckw = ckb = None
    if save:
        ckw = w0.new_empty(s.batch, s.heads, s.n_mb, s.d, s.d)
        ckb = None if b0 is None else w0.new_empty(s.batch, s.heads, s.n_mb, s.d)
    dummy = w0
    _linear_fwd_kernel[s.grid](
        q,
        k,
        v,
        lr,
        out,
        w0,
        b0 if b0 is not None else dummy,
        sw0,
        sb0 if sb0 is not None else dummy,
        w_out,
        b_out if b_out is not None else dummy,
        sw_out,
        sb_out if sb_out is not None else dummy,
        ckw if ckw is not None else dummy,
        ckb if ckb is not None else dummy,
        scale,
        ln_w if ln_w is not None else dummy,
        ln_b if ln_b is not None else dummy,
        s.seq,
        s.heads,
        s.position,
        s.n_mb,
        s.eps,
        D=s.d,
        MB=s.mb,
        BB=s.bb,
        HAS_BIAS=s.has_bias,
        HAS_NORM=s.has_norm,
        SAVE=save,
        PREC=s.prec,
        num_warps=s.warps,
    )
    return out, [w_out, b_out, sw_out, sb_out], [ckw, ckb]


def _backward(
    s: _Setup,
    saved: tuple[Tensor | None, ...],
    grads: tuple[Tensor | None, ...],
) -> tuple[Tensor | None, ...]:
    q, k, v, lr, scale, ln_w, ln_b, sw0, sb0, ckw, ckb = saved
    dz, dw, db, dsw, dsb = grads
    f32 = torch.float32
    dq, dk, dv = (torch.empty(q.shape, dtype=f32, device=q.device) for _ in range(3))
    dlr = torch.empty(lr.shape, dtype=f32, device=q.device)
    dw0 = torch.empty_like(ckw[:, :, 0])
    db0 = None if ckb is None else torch.empty_like(ckb[:, :, 0])
    dsw0 = torch.zeros_like(dw0)
    dsb0 = None if db0 is None else torch.zeros_like(db0)
    dscale = torch.zeros(s.batch, s.heads, s.bb, dtype=f32, device=q.device)
    dlnw = dlnb = None
    if ln_w is not None:
        dlnw = torch.zeros(s.batch, s.heads, s.d, dtype=f32, device=q.device)
        dlnb = torch.zeros_like(dlnw)
    dummy = dw0
    _linear_bwd_kernel[s.grid](
        q,
        k,
        v,
        lr,
        dz.contiguous(),
        ckw,
        ckb if ckb is not None else dummy,
        sw0,
        sb0 if sb0 is not None else dummy,
        fp32(dw),
        fp32(db.squeeze(-2)) if s.has_bias else dummy,
        fp32(dsw),
        fp32(dsb.squeeze(-2)) if s.has_bias else dummy,
        scale,
        ln_w if ln_w is not None else dummy,
        ln_b if ln_b is not None else dummy,
        dq,
        dk,
        dv,
        dlr,
        dw0,
        db0 if db0 is not None else dummy,
        dsw0,
        dsb0 if dsb0 is not None else dummy,
        dscale,
        dlnw if dlnw is not None else dummy,
        dlnb if dlnb is not None else dummy,
        s.seq,
        s.heads,
        s.position,
        s.n_mb,
        s.eps,
        D=s.d,
        MB=s.mb,
        BB=s.bb,
        HAS_BIAS=s.has_bias,
        HAS_NORM=s.has_norm,
        PREC=s.prec,
        num_warps=s.warps,
        num_stages=1,  # no multi-buffering of the checkpoint loads: 137 KB of shared memory at d = 128, not 265
    )
    d_scale = dscale.sum(dim=(0, 1))[: s.mb]
    d_ln = (None, None) if dlnw is None else (dlnw.sum(0).to(ln_w.dtype), dlnb.sum(0).to(ln_b.dtype))
    return dq, dk, dv, dlr, d_scale, *d_ln, dw0, db0, dsw0, dsb0


class _TritonLinear(torch.autograd.Function):
    """Differentiable wrapper: forward saves one state per mini-batch, backward runs ``_linear_bwd_kernel``."""

    @staticmethod
    def forward(ctx, q, k, v, lr, scale, ln_w, ln_b, w0, b0, sw0, sb0, s):  # type: ignore[override]
        state = [fp32(w0), None if b0 is None else fp32(b0.squeeze(-2)), fp32(sw0)]
        state.append(None if sb0 is None else fp32(sb0.squeeze(-2)))
        out, final, (ckw, ckb) = _forward(s, q, k, v, lr, scale, ln_w, ln_b, state, save=True)
        ctx.setup = s
        ctx.dtypes = (q.dtype, w0.dtype, None if b0 is None else b0.dtype)
        ctx.save_for_backward(q, k, v, lr, scale, ln_w, ln_b, state[2], state[3], ckw, ckb)
        w, b, sw, sb = final
        to_state = (lambda t: t.to(q.dtype)) if q.dtype != torch.float32 else (lambda t: t)
        w, sw = to_state(w), to_state(sw)
        b = None if b is None else to_state(b.unsqueeze(-2))
        sb = None if sb is None else to_state(sb.unsqueeze(-2))
        return out, w, b, sw, sb

    @staticmethod
    def backward(ctx, dz, dw, db, dsw, dsb):  # type: ignore[override]
        s: _Setup = ctx.setup
        grads = _backward(s, ctx.saved_tensors, (dz, dw, db, dsw, dsb))
        dq, dk, dv, dlr, d_scale, d_lnw, d_lnb, dw0, db0, dsw0, dsb0 = grads
        dtype = ctx.dtypes[0]
        dq, dk, dv, dlr = (g.to(dtype) for g in (dq, dk, dv, dlr))
        dw0 = dw0.to(ctx.dtypes[1])
        db0 = None if db0 is None else db0.unsqueeze(-2).to(ctx.dtypes[2])
        if s.position == 0:  # the initial sums are not read when no mini-batch is open
            dsw0 = dsb0 = None
        else:
            dsw0 = dsw0.to(dtype)
            dsb0 = None if dsb0 is None else dsb0.unsqueeze(-2).to(dtype)
        return dq, dk, dv, dlr, d_scale, d_lnw, d_lnb, dw0, db0, dsw0, dsb0, None


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
    """One token through ``_linear_step_kernel``; no autograd."""
    close = s.position == s.mb - 1
    pending = s.position > 0
    w, b, sw, sb = _flat_state(state, s.has_bias)
    out = torch.empty_like(q)
    dtype = q.dtype
    if close:
        w_out = torch.empty(w.shape, dtype=dtype, device=q.device)
        b_out = None if b is None else torch.empty(b.shape, dtype=dtype, device=q.device)
        sw_out, sb_out = w_out, b_out  # not written
    else:
        sw_out = torch.empty(w.shape, dtype=dtype, device=q.device)
        sb_out = None if b is None else torch.empty(b.shape, dtype=dtype, device=q.device)
        w_out, b_out = sw_out, sb_out  # not written
    dummy = w
    _linear_step_kernel[s.grid](
        q,
        k,
        v,
        lr,
        out,
        w,
        b if b is not None else dummy,
        sw,
        sb if sb is not None else dummy,
        w_out,
        b_out if b_out is not None else dummy,
        sw_out,
        sb_out if sb_out is not None else dummy,
        scale,
        ln_w if ln_w is not None else dummy,
        ln_b if ln_b is not None else dummy,
        s.heads,
        s.position,
        s.eps,
        D=s.d,
        HAS_BIAS=s.has_bias,
        HAS_NORM=s.has_norm,
        PENDING=pending,
        CLOSE=close,
        num_warps=s.warps,
    )
    if close:
        weights = (w_out,) if b_out is None else (w_out, b_out.unsqueeze(-2))
        return out, TTTState(weights, tuple(torch.zeros_like(x) for x in weights), 0)
    sums = (sw_out,) if sb_out is None else (sw_out, sb_out.unsqueeze(-2))
    return out, TTTState(state.weights, sums, s.position + 1)


def triton_linear(
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
    """``ttt_linear(..., form="triton")`` (arguments already validated by the op; ``token_offset`` (b,) gives the
    mini-batch size b). Returns (z, TTTState)."""
    check_launchable(q)
    state = initial_state if initial_state is not None else TTTState.initial(inner, q.shape[0])
    has_bias = len(state.weights) > 1
    has_norm = ln_weight is not None
    s = _Setup(q, token_offset.shape[0], state.position, has_bias, has_norm, eps)  # b = len(token_offset)
    scale = token_scales(token_offset.to(torch.float32)).contiguous()
    q, k, v, lr = (x.contiguous() for x in (q, k, v, lr))
    ln_w = None if ln_weight is None else ln_weight.contiguous()
    ln_b = None if ln_bias is None else ln_bias.contiguous()
    b0 = state.weights[1] if has_bias else None
    sb0 = state.grad_sums[1] if has_bias else None
    tensors = (q, k, v, lr, scale, ln_w, ln_b, state.weights[0], b0, state.grad_sums[0], sb0)
    if needs_grad(*tensors):
        z, w, b, sw, sb = _TritonLinear.apply(*tensors, s)
    elif s.seq == 1:
        return _step(s, q, k, v, lr, scale, ln_w, ln_b, state)
    else:
        z, (w, b, sw, sb), _ = _forward(s, q, k, v, lr, scale, ln_w, ln_b, _flat_state(state, has_bias), save=False)
        w, sw = w.to(q.dtype), sw.to(q.dtype)
        b = None if b is None else b.unsqueeze(-2).to(q.dtype)
        sb = None if sb is None else sb.unsqueeze(-2).to(q.dtype)
    weights = (w,) if b is None else (w, b)
    sums = (sw,) if sb is None else (sw, sb)
    return z, TTTState(weights, sums, s.final_position)
