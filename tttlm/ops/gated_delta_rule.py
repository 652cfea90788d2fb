"""The gated delta rule of Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2024), in plain PyTorch.

Per head, with a state S ∈ R^{dk×dv}, L2-normalised key k_t and query q_t, decay α_t = exp(g_t) ∈ (0, 1] and
write strength β_t ∈ (0, 1):

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ        o_t = S_tᵀ q_t / √dk

Three forms with one signature (``gated_delta_rule``): "recurrent" (token by token: the readable reference and the
decode step), "chunk" (the chunkwise WY/UT-transform form that flash-linear-attention's ``chunk_gated_delta_rule``
computes: matmuls inside chunks, a loop over chunks only, and a hand-written backward, ``_ChunkRule``) and, on CUDA
when ``flash-linear-attention`` is installed, "fla" (its Triton kernel, which takes the same arguments).

Chunk form. Inside a chunk starting from S_0, with Γ_i = Π_{j≤i} α_j, the state is
``S_i = Γ_i S_0 + Σ_{j≤i} (Γ_i/Γ_j) k_j w_jᵀ`` for pseudo-values w_j. Substituting into the update gives the
unit-lower-triangular system ``(I + A) W = diag(β) V − diag(βΓ) K S_0`` with ``A_ij = β_i (Γ_i/Γ_j) k_i·k_j``
(j < i), solved once per chunk for ``U = (I+A)⁻¹ diag(β) V`` and ``Wk = (I+A)⁻¹ diag(βΓ) K``; then
``W = U − Wk S_0``, ``O = diag(Γ) Q S_0 + (M ⊙ Q Kᵀ) W`` with ``M_ij = Γ_i/Γ_j`` (j ≤ i), and
``S_C = Γ_C S_0 + (diag(Γ_C/Γ) K)ᵀ W``. The inverse T = (I+A)⁻¹ is the "UT transform" (fla forms it by forward
substitution row by row; one batched triangular solve here).

Measured against autograd through the same forward (float32, 1 thread, CPU time, forward + backward;
docs/BENCHMARKS.md): the tiny preset's heads (3 × 16/32) 2x faster at 1 × 2048 tokens and 1.4x at 8 × 128, the
125m preset's (2 × 256/512) 1.2-1.3x at T = 2048; the forward is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

try:  # the fast path, GPU only; its arguments match ours (q, k, v, g, beta, scale, initial_state)
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule as _fla_chunk_gated_delta_rule
except Exception:  # not installed, or no triton/GPU: the plain PyTorch forms are used
    _fla_chunk_gated_delta_rule = None

FORMS = ("chunk", "recurrent")


def fla_available() -> bool:
    """Whether the flash-linear-attention kernel could be imported (it also needs CUDA tensors)."""
    return _fla_chunk_gated_delta_rule is not None


def _recurrent(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """Token-by-token rule on (batch, heads, T, ·) tensors; q already scaled. Returns o and the final state."""
    outputs = []
    for t in range(q.shape[2]):
        state = state * g[:, :, t, None, None].exp()
        delta = beta[:, :, t, None] * (v[:, :, t] - torch.einsum("bhk,bhkv->bhv", k[:, :, t], state))
        state = state + k[:, :, t, :, None] * delta[:, :, None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], state))
    return torch.stack(outputs, dim=2), state


def _across_chunks(
    u: Tensor, w_k: Tensor, k_to_end: Tensor, chunk_decay: Tensor, state: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The only sequential part of the chunk form, on (batch, heads, N, C, ·) blocks: per chunk n, with S the state
    before it, ``V'_n = U_n − W_n S`` and ``S ← Γ_C S + K̃_nᵀ V'_n`` (K̃ = diag(Γ_C/Γ) K). Returns the state before
    each chunk (batch, heads, N, dk, dv), V' and the final state."""
    starts = u.new_empty(*u.shape[:3], *state.shape[-2:])
    v_new = torch.empty_like(u)
    for n in range(u.shape[2]):
        starts[:, :, n] = state
        torch.sub(u[:, :, n], w_k[:, :, n] @ state, out=v_new[:, :, n])
        state = chunk_decay[:, :, n, None, None] * state + k_to_end[:, :, n].transpose(-1, -2) @ v_new[:, :, n]
    return starts, v_new, state


class _ChunkRule(torch.autograd.Function):
    """The chunk form (module docstring) on chunked (batch, heads, N, C, ·) inputs, with its backward written out:
    one autograd node, every gradient a batched product over all chunks except the adjoint of the carried state.

    Backward, from dO and the final state's gradient: the state's adjoint runs back over the chunks,
    ``dV'_n = K̃_n dS_{n+1} + P_nᵀ dO_n`` and ``dS_n = Γ_C dS_{n+1} + Q̃_nᵀ dO_n − W_nᵀ dV'_n``
    (Q̃ = diag(Γ) Q, P = M ⊙ Q Kᵀ); then per chunk, all at once: ``dU = dV'``, ``dW = −dV' S_nᵀ``, through
    the inverse ``[dVβ, dKβΓ] = Tᵀ [dU, dW]`` (T = (I + A)⁻¹) and ``dA = −(dVβ Uᵀ + dKβΓ Wᵀ)`` (strictly lower),
    and through the decays with ``∂γ`` collected from every place Γ appears (γ = cumsum g, so ``dg`` is a reverse
    cumsum of dγ).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor
    ) -> tuple[Tensor, Tensor]:
        chunk = q.shape[-2]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # each is used by several products
        log_gamma = g.cumsum(-1)  # γ: log Γ
        gamma = log_gamma.exp()
        ones = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device)
        # Γ_i / Γ_j for j ≤ i; entries above the diagonal are masked *before* exp (their exponent is positive)
        diff = log_gamma[..., :, None] - log_gamma[..., None, :]
        decay = diff.masked_fill_(~ones.tril(), float("-inf")).exp_()
        k_beta = k * beta[..., None]
        a = (k_beta @ k.transpose(-1, -2)).mul_(decay).masked_fill_(~ones.tril(-1), 0.0)
        # T = (I + A)⁻¹ once, then products: a triangular solve with the dk + dv right-hand sides measured ~1.5x
        # the inverse plus two products, and the backward then needs products with Tᵀ only
        eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
        inverse = torch.linalg.solve_triangular(a + eye, eye.expand_as(a), upper=False, unitriangular=True)
        u = inverse @ (v * beta[..., None])
        w_k = inverse @ (k_beta * gamma[..., None])
        q_decayed = q * gamma[..., None]
        scores = (q @ k.transpose(-1, -2)).mul_(decay)
        to_end = (log_gamma[..., -1:] - log_gamma).exp()
        k_to_end = k * to_end[..., None]
        chunk_decay = gamma[..., -1]  # Γ_C per chunk
        starts, v_new, state = _across_chunks(u, w_k, k_to_end, chunk_decay, state)
        out = q_decayed @ starts + scores @ v_new
        ctx.save_for_backward(q, k, v, beta, gamma, to_end, decay, a, inverse, u, w_k, scores, starts, v_new)
        return out, state

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor | None, d_state: Tensor | None) -> tuple[Tensor, ...]:
        q, k, v, beta, gamma, to_end, decay, a, inverse, u, w_k, scores, starts, v_new = ctx.saved_tensors
        # contiguous once: it arrives as a view of the caller's (batch, T, heads, dv) layout
        d_out = torch.zeros_like(v_new) if d_out is None else d_out.contiguous()
        d_state = torch.zeros_like(starts[:, :, 0]) if d_state is None else d_state
        q_decayed = q * gamma[..., None]
        k_to_end = k * to_end[..., None]
        # the carried state's adjoint, backwards over the chunks
        from_out = scores.transpose(-1, -2) @ d_out  # Pᵀ dO
        state_from_out = q_decayed.transpose(-1, -2) @ d_out  # Q̃ᵀ dO
        d_ends = torch.empty_like(starts)  # ∂/∂(state after chunk n)
        d_u = torch.empty_like(v_new)  # ∂V' = ∂U
        chunk_decay = gamma[..., -1]
        for n in reversed(range(v_new.shape[2])):
            d_ends[:, :, n] = d_state
            torch.add(from_out[:, :, n], k_to_end[:, :, n] @ d_state, out=d_u[:, :, n])
            d_state = (
                chunk_decay[:, :, n, None, None] * d_state
                + state_from_out[:, :, n]
                - w_k[:, :, n].transpose(-1, -2) @ d_u[:, :, n]
            )
        # everything else at once: products with the start states, then back through the solve and the decays
        d_w_k = -(d_u @ starts.transpose(-1, -2))
        d_q_decayed = d_out @ starts.transpose(-1, -2)
        d_p = d_out @ v_new.transpose(-1, -2)
        d_k_to_end = v_new @ d_ends.transpose(-1, -2)
        d_chunk_decay = torch.linalg.vecdot(starts.flatten(-2), d_ends.flatten(-2))
        inverse_t = inverse.transpose(-1, -2)
        d_v_beta, d_k_gamma = inverse_t @ d_u, inverse_t @ d_w_k
        d_a = -(d_v_beta @ u.transpose(-1, -2) + d_k_gamma @ w_k.transpose(-1, -2))
        d_a = d_a.tril_(-1)
        # ∂γ from the decay matrix M_ij = exp(γ_i − γ_j) in A and P: E = dA ⊙ A + dP ⊙ P, row sums − column sums
        e = (d_a * a).addcmul_(d_p, scores)
        d_log_gamma = e.sum(-1) - e.sum(-2)
        d_a = d_a.mul_(decay)  # ∂(Kβ Kᵀ)
        d_scores = d_p.mul_(decay)  # ∂(Q Kᵀ), lower (M is 0 above the diagonal)
        k_beta = k * beta[..., None]
        d_k_beta = d_a @ k + d_k_gamma * gamma[..., None]
        d_k = d_a.transpose(-1, -2) @ k_beta + d_scores.transpose(-1, -2) @ q + d_k_to_end * to_end[..., None]
        d_q = d_scores @ k + d_q_decayed * gamma[..., None]
        # Γ in Q̃ and in KβΓ; Γ_C/Γ in K̃; Γ_C as the chunk decay
        d_log_gamma += (d_q_decayed * q_decayed).sum(-1) + (d_k_gamma * k_beta).sum(-1) * gamma
        from_end = (d_k_to_end * k_to_end).sum(-1)
        d_log_gamma -= from_end
        d_log_gamma[..., -1] += from_end.sum(-1) + d_chunk_decay * chunk_decay
        d_g = d_log_gamma.flip(-1).cumsum(-1).flip(-1)
        d_beta = (d_v_beta * v).sum(-1) + (d_k_beta * k).sum(-1)
        d_k += d_k_beta * beta[..., None]
        d_v = d_v_beta * beta[..., None]
        return d_q, d_k, d_v, d_g, d_beta, d_state


def _chunked(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Chunkwise WY form (see the module docstring) on (batch, heads, T, ·) tensors; q already scaled."""
    seq = q.shape[2]
    pad = -seq % chunk_size
    if pad:  # padding tokens have g = 0 and β = 0: no decay, no write, so the final state is unchanged
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    q, k, v = (t.unflatten(2, (-1, chunk_size)) for t in (q, k, v))  # (B, H, N, C, ·)
    g, beta = g.unflatten(2, (-1, chunk_size)), beta.unflatten(2, (-1, chunk_size))  # (B, H, N, C)
    out, state = _chunk_rule(q, k, v, g, beta, state)
    return out.flatten(2, 3)[:, :, :seq], state


@torch.compiler.disable
def _chunk_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """``_ChunkRule`` on (batch, heads, N, C, ·) blocks, eager also under torch.compile (the model around it
    compiles; tttlm.models.compiled): its loop over chunks writes into slices (``out=``), which Dynamo cannot trace,
    and with a single chunk, where it could, AOTAutograd's trace of the hand-written backward assumed other strides
    than the eager kernels give (a view error in the backward, PyTorch 2.13)."""
    return _ChunkRule.apply(q, k, v, g, beta, state)


def gated_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    *,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    form: str = "chunk",
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """The gated delta rule over a sequence.

    Args:
        q, k: (batch, T, heads, dk); k should be L2-normalised (the update is only contractive for ‖k‖ ≤ 1).
        v: (batch, T, heads, dv).
        g: (batch, T, heads), log of the decay α_t (≤ 0).
        beta: (batch, T, heads), write strength in (0, 1).
        scale: query scale, default 1/√dk.
        initial_state: (batch, heads, dk, dv) or None (zeros).
        form: "chunk", "recurrent" or "fla" (CUDA + flash-linear-attention only).
        chunk_size: chunk length of the chunk form.

    Returns:
        o (batch, T, heads, dv) in the dtype of v, and the final state (batch, heads, dk, dv) in float32 or wider.
    """
    batch, _, heads, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    dtype = torch.promote_types(v.dtype, torch.float32)  # the state accumulates over the whole stream
    if initial_state is None:
        initial_state = q.new_zeros(batch, heads, dk, v.shape[-1], dtype=dtype)
    if form == "fla":
        if not (fla_available() and q.is_cuda):
            raise ValueError("form='fla' needs CUDA tensors and the flash-linear-attention package; use 'chunk'")
        o, state = _fla_chunk_gated_delta_rule(
            q, k, v, g=g, beta=beta, scale=scale, initial_state=initial_state.float(), output_final_state=True
        )
        return o, state
    if form not in FORMS:
        raise ValueError(f"form must be one of {(*FORMS, 'fla')}; got {form!r}")
    with torch.autocast(q.device.type, enabled=False):
        args = [t.transpose(1, 2).to(dtype) for t in (q, k, v, g, beta)]
        args[0] = args[0] * scale
        if form == "recurrent":
            o, state = _recurrent(*args, initial_state.to(dtype))
        else:
            o, state = _chunked(*args, initial_state.to(dtype), chunk_size)
    return o.transpose(1, 2).to(v.dtype), state
