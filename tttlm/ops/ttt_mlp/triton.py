"""TTT-MLP, ``form="triton"``: fused Triton forward and decode-step kernels; backward by per-mini-batch recompute.

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
  output LayerNorm + residual. With ``SAVE`` the state at the start of every mini-batch is stored for backward.
- ``_mlp_step_kernel``: one decode token, the same two passes with vectors.
- Backward: ``tttlm.ops.triton_common.recompute_backward`` — each mini-batch recomputed in PyTorch (the dual
  form, float32) from its saved start state and differentiated on its own, last to first. Not a Triton kernel.
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
    fp32,
    gelu_tanh,
    gelu_tanh_grad,
    ln_l2_grad,
    ln_residual,
    needs_grad,
    num_minibatches,
    recompute_backward,
    row_block,
    tril_mask,
)
from tttlm.ops.ttt_mlp.dual import dual_chunk


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
    gamma = tl.zeros([D], tl.float32)
    beta = tl.zeros([D], tl.float32)
    if HAS_NORM:
        gamma = tl.load(lnw_ptr + hi * D + cd).to(tl.float32)
        beta = tl.load(lnb_ptr + hi * D + cd).to(tl.float32)
    scale = tl.load(scale_ptr + rows, mask=rows < MB, other=0.0)
    last_scale = tl.load(scale_ptr + MB - 1)
    tril = tril_mask(rows)
    seq0 = bi.to(tl.int64) * T
    for m in range(NM):
        t = m * MB - P0 + rows
        valid = (rows < MB) & (t >= 0) & (t < T)
        tok = (seq0 + t) * H + hi
        offs = tok[:, None] * D + cd[None, :]
        Q = tl.load(q_ptr + offs, mask=valid[:, None], other=0.0).to(tl.float32)
        K = tl.load(k_ptr + offs, mask=valid[:, None], other=0.0).to(tl.float32)
        V = tl.load(v_ptr + offs, mask=valid[:, None], other=0.0).to(tl.float32)
        lr = tl.load(lr_ptr + tok, mask=valid, other=0.0).to(tl.float32)
        pending = (m == 0) & (P0 > 0)
        close = (m + 1) * MB <= P0 + T
        ck = pid.to(tl.int64) * NM + m

        # pass A: key-side forward through the MLP at the mini-batch's start state
        Z2k = tl.zeros([BB, D], tl.float32) + b2[None, :]
        for h0 in range(0, HID, BH):
            W1t = tl.load(w1_ptr + mbase + cd[:, None] * HID + (h0 + ch)[None, :])
            b1t = tl.load(b1_ptr + hbase + h0 + ch)
            W2t = tl.load(w2_ptr + mbase + (h0 + ch)[:, None] * D + cd[None, :])
            X2k = gelu_tanh(tl.dot(K, W1t, input_precision=PREC) + b1t[None, :])
            Z2k += tl.dot(X2k, W2t, input_precision=PREC)
        if HAS_NORM:  # noqa: SIM108 (constexpr branch: only one side is compiled)
            G2 = ln_l2_grad(Z2k, V - K, gamma, beta, D, eps)
        else:
            G2 = Z2k - V
        L2 = lr[:, None] * G2
        A1 = tl.dot(Q, tl.trans(K), input_precision=PREC) + 1.0
        E1 = tl.where(tril, scale[:, None] * A1 * lr[None, :], 0.0)

        # pass B: per hidden tile, layer 1 (dual form), its update, and layer 2's accumulations
        Z2q = tl.zeros([BB, D], tl.float32) + b2[None, :]
        A2 = tl.zeros([BB, BB], tl.float32) + 1.0
        for h0 in range(0, HID, BH):
            w1_offs = cd[:, None] * HID + (h0 + ch)[None, :]
            w2_offs = (h0 + ch)[:, None] * D + cd[None, :]
            W1t = tl.load(w1_ptr + mbase + w1_offs)
            b1t = tl.load(b1_ptr + hbase + h0 + ch)
            W2t = tl.load(w2_ptr + mbase + w2_offs)
            if SAVE:
                tl.store(ck_w1_ptr + ck * D * HID + w1_offs, W1t)
                tl.store(ck_b1_ptr + ck * HID + h0 + ch, b1t)
                tl.store(ck_w2_ptr + ck * D * HID + w2_offs, W2t)
            Z1k = tl.dot(K, W1t, input_precision=PREC) + b1t[None, :]
            X2k = gelu_tanh(Z1k)
            G1 = tl.dot(G2, tl.trans(W2t), input_precision=PREC) * gelu_tanh_grad(Z1k)
            L1 = lr[:, None] * G1
            Z1q = tl.dot(Q, W1t, input_precision=PREC) + b1t[None, :] - tl.dot(E1, G1, input_precision=PREC)
            SW1 = tl.dot(tl.trans(K), L1, input_precision=PREC)
            Sb1 = tl.sum(L1, axis=0)
            SW2 = tl.dot(tl.trans(X2k), L2, input_precision=PREC)
            if pending:
                S0W1 = tl.load(sw1_in_ptr + mbase + w1_offs)
                S0b1 = tl.load(sb1_in_ptr + hbase + h0 + ch)
                Z1q = Z1q - scale[:, None] * (tl.dot(Q, S0W1, input_precision=PREC) + S0b1[None, :])
                SW1 = SW1 + S0W1
                Sb1 = Sb1 + S0b1
            X2q = gelu_tanh(Z1q)
            Z2q += tl.dot(X2q, W2t, input_precision=PREC)
            A2 += tl.dot(X2q, tl.trans(X2k), input_precision=PREC)
            if pending:
                S0W2 = tl.load(sw2_in_ptr + mbase + w2_offs)
                Z2q = Z2q - scale[:, None] * tl.dot(X2q, S0W2, input_precision=PREC)
                SW2 = SW2 + S0W2
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
        E2 = tl.where(tril, scale[:, None] * A2 * lr[None, :], 0.0)
        Z2q = Z2q - tl.dot(E2, G2, input_precision=PREC)
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


def _as_state(flat: list[Tensor], dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(W1, b1, W2, b2) with the vectors back as (B, H, 1, n), in ``dtype``."""
    w1, b1, w2, b2 = flat
    return tuple(t.to(dtype) for t in (w1, b1.unsqueeze(-2), w2, b2.unsqueeze(-2)))


class _TritonMLP(torch.autograd.Function):
    """Differentiable wrapper: forward saves one state per mini-batch; backward recomputes per mini-batch."""

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
        q, k, v, lr, scale, ln_w, ln_b, *rest = ctx.saved_tensors
        sums_in, ck = rest[:4], rest[4:]
        norm = None if ln_w is None else (fp32(ln_w), fp32(ln_b))
        vec = lambda t: t.unsqueeze(-2)  # noqa: E731
        checkpoints = (ck[0], vec(ck[1]), ck[2], vec(ck[3]))
        pending = None
        if s.position > 0:
            pending = (sums_in[0], vec(sums_in[1]), sums_in[2], vec(sums_in[3]))
        (dq, dk, dv, dlr), d_scale, d_norm, d_w, d_s = recompute_backward(
            dual_chunk,
            (q, k, v, lr),
            scale,
            norm,
            checkpoints,
            pending,
            s.position,
            s.mb,
            s.eps,
            dz,
            tuple(grads[:4]),
            tuple(grads[4:]),
        )
        dtype = q.dtype
        d_ln = (None, None) if d_norm is None else (d_norm[0].to(ln_w.dtype), d_norm[1].to(ln_b.dtype))
        d_w = tuple(g.to(t) for g, t in zip(d_w, ctx.dtypes, strict=True))
        d_s = (None,) * 4 if d_s is None else tuple(g.to(dtype) for g in d_s)
        return (dq.to(dtype), dk.to(dtype), dv.to(dtype), dlr.to(dtype), d_scale, *d_ln, *d_w, *d_s, None)


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
    token_offset: Tensor | None,
    mini_batch_size: int,
    initial_state: TTTState | None,
    eps: float,
) -> tuple[Tensor, TTTState]:
    """``ttt_mlp(..., form="triton")`` (arguments already validated by the op). Returns (z, TTTState)."""
    check_launchable(q)
    state = initial_state if initial_state is not None else TTTState.initial(inner, q.shape[0])
    hidden = state.weights[0].shape[-1]
    s = _Setup(q, hidden, mini_batch_size, state.position, ln_weight is not None, eps)
    if token_offset is None:
        token_offset = q.new_zeros(mini_batch_size)
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
