"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2024): the sequence-mixing layer around the gated delta rule
(``tttlm.ops.gated_delta_rule``, where the maths and its forms are)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tttlm.layers.conv import CausalConv
from tttlm.ops.gated_delta_rule import FORMS, fla_available, gated_delta_rule


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
