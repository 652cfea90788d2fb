"""The gated delta rule of Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2024), in plain PyTorch.

Per head, with a state S ∈ R^{dk×dv}, L2-normalised key k_t and query q_t, decay α_t = exp(g_t) ∈ (0, 1] and
write strength β_t ∈ (0, 1):

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ        o_t = S_tᵀ q_t / √dk

Three forms with one signature (``gated_delta_rule``): "recurrent" (token by token: the readable reference and the
decode step), "chunk" (the chunkwise WY form, matmuls inside chunks and a short loop over chunks) and, on CUDA
when ``flash-linear-attention`` is installed, "fla" (its Triton kernel, which takes the same arguments).

Chunk form. Inside a chunk starting from S_0, with Γ_i = Π_{j≤i} α_j, the state is
``S_i = Γ_i S_0 + Σ_{j≤i} (Γ_i/Γ_j) k_j w_jᵀ`` for pseudo-values w_j. Substituting into the update gives the
unit-lower-triangular system ``(I + A) W = diag(β) V − diag(βΓ) K S_0`` with ``A_ij = β_i (Γ_i/Γ_j) k_i·k_j``
(j < i), solved once per chunk for ``U = (I+A)⁻¹ diag(β) V`` and ``Wk = (I+A)⁻¹ diag(βΓ) K``; then
``W = U − Wk S_0``, ``O = diag(Γ) Q S_0 + (M ⊙ Q Kᵀ) W`` with ``M_ij = Γ_i/Γ_j`` (j ≤ i), and
``S_C = Γ_C S_0 + (diag(Γ_C/Γ) K)ᵀ W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
    log_gamma = g.cumsum(-1)
    ones = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device)
    # Γ_i / Γ_j for j ≤ i; entries above the diagonal are masked *before* exp (their exponent is positive)
    diff = log_gamma[..., :, None] - log_gamma[..., None, :]
    decay = diff.masked_fill(~ones.tril(), float("-inf")).exp()
    k_beta = k * beta[..., None]
    a = (k_beta @ k.transpose(-1, -2)) * decay.masked_fill(~ones.tril(-1), 0.0)
    eye = torch.eye(chunk_size, dtype=q.dtype, device=q.device)
    solve = torch.linalg.solve_triangular(
        eye + a,
        torch.cat([v * beta[..., None], k_beta * log_gamma[..., None].exp()], -1),
        upper=False,
        unitriangular=True,
    )
    u, w_k = solve.split([v.shape[-1], k.shape[-1]], dim=-1)
    q_decayed = q * log_gamma[..., None].exp()
    scores = (q @ k.transpose(-1, -2)) * decay
    k_to_end = k * (log_gamma[..., -1:] - log_gamma)[..., None].exp()
    chunk_decay = log_gamma[..., -1].exp()  # (B, H, N)
    outputs = []
    for n in range(q.shape[2]):
        w = u[:, :, n] - w_k[:, :, n] @ state
        outputs.append(q_decayed[:, :, n] @ state + scores[:, :, n] @ w)
        state = chunk_decay[:, :, n, None, None] * state + k_to_end[:, :, n].transpose(-1, -2) @ w
    out = torch.cat(outputs, dim=2)
    return out[:, :, :seq], state


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
