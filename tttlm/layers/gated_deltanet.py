"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2024): the gated delta rule and the layer around it, in plain PyTorch.

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

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tttlm.layers.conv import CausalConv

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


class GatedDeltaNetCache(NamedTuple):
    """What a Gated DeltaNet layer carries: the state (batch, heads, dk, dv) and the three short-conv states."""

    state: Tensor
    conv_q: Tensor
    conv_k: Tensor
    conv_v: Tensor


class GatedDeltaNet(nn.Module):
    """Gated DeltaNet sequence-mixing layer. Input and output (batch, seq, hidden_size).

    q, k, v = SiLU(ShortConv(x θ)); q, k L2-normalised per head; β = sigmoid(x θβ);
    g = −exp(A_log) · softplus(x θα + dt_bias); o = gated delta rule; y = θO (RMSNorm(o) ⊙ SiLU(x θG)), the
    RMSNorm per head. ``forward(x, cache) -> (y, cache)``; a single token takes the recurrent (decode) form.

    Args:
        hidden_size: model width.
        num_heads: heads; key/query head dim ``head_dim``, value head dim ``expand_v × head_dim``.
        head_dim: key head dim dk.
        expand_v: value head dim / key head dim.
        conv_kernel: short causal conv kernel on q, k and v.
        chunk_size: chunk length of the chunk form.
        form: "chunk" (default) or "recurrent" for multi-token calls; on CUDA with flash-linear-attention
            installed, "chunk" runs its Triton kernel.
        eps: epsilon of the output RMSNorm and the q/k L2 normalisation.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        *,
        expand_v: int = 2,
        conv_kernel: int = 4,
        chunk_size: int = 64,
        form: str = "chunk",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"gated deltanet: form must be one of {FORMS}; got {form!r}")
        self.num_heads, self.head_dim, self.v_head_dim = num_heads, head_dim, expand_v * head_dim
        self.chunk_size, self.form, self.eps = chunk_size, form, eps
        key_dim, value_dim = num_heads * head_dim, num_heads * self.v_head_dim
        self.q_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, value_dim, bias=False)
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.g_proj = nn.Linear(hidden_size, value_dim, bias=False)
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)
        self.conv_q = CausalConv(key_dim, conv_kernel)
        self.conv_k = CausalConv(key_dim, conv_kernel)
        self.conv_v = CausalConv(value_dim, conv_kernel)
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.o_norm_weight = nn.Parameter(torch.empty(self.v_head_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise this layer's own parameters (one ``nn.init`` call each, so loading a checkpoint skips them).

        A = exp(A_log) log-uniform in [1, 16] (Mamba-2's range); dt_bias uniform in [softplus⁻¹(0.001),
        softplus⁻¹(0.1)], so dt = softplus(dt_bias) is close to log-uniform in [0.001, 0.1] (softplus(x) ≈ eˣ
        there); output norm weight 1.
        """
        nn.init.uniform_(self.A_log, 0.0, math.log(16.0))
        nn.init.uniform_(self.dt_bias, math.log(math.expm1(0.001)), math.log(math.expm1(0.1)))
        nn.init.ones_(self.o_norm_weight)

    def forward(self, x: Tensor, cache: GatedDeltaNetCache | None = None) -> tuple[Tensor, GatedDeltaNetCache]:
        """x: (batch, seq, hidden) normalised block input. Returns (batch, seq, hidden) and the new cache."""
        q, conv_q = self.conv_q(self.q_proj(x), None if cache is None else cache.conv_q)
        k, conv_k = self.conv_k(self.k_proj(x), None if cache is None else cache.conv_k)
        v, conv_v = self.conv_v(self.v_proj(x), None if cache is None else cache.conv_v)
        q, k = (
            F.normalize(F.silu(t).unflatten(-1, (self.num_heads, self.head_dim)), dim=-1, eps=self.eps) for t in (q, k)
        )
        v = F.silu(v).unflatten(-1, (self.num_heads, self.v_head_dim))
        beta = torch.sigmoid(self.b_proj(x))
        g = -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)
        form = "recurrent" if x.shape[1] == 1 else self.form
        if form == "chunk" and x.is_cuda and fla_available():
            form = "fla"
        o, state = gated_delta_rule(
            q,
            k,
            v,
            g,
            beta,
            initial_state=None if cache is None else cache.state,
            form=form,
            chunk_size=self.chunk_size,
        )
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps) * self.o_norm_weight
        o = o * F.silu(self.g_proj(x)).unflatten(-1, (self.num_heads, self.v_head_dim))
        return self.o_proj(o.flatten(-2)), GatedDeltaNetCache(state, conv_q, conv_k, conv_v)
