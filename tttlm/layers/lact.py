"""LaCT's language-model mixer: sliding-window attention and a large-chunk SwiGLU fast weight in one layer, sharing
the q/k/v projections and the output projection (Zhang et al. 2025, "Test-Time Training Done Right"; the release's
``lact_llm/lact_model/layer_lact_swiglu.py``, ``LaCTSWIGLULayer``).

From the normalised block input x (batch, seq, hidden):

    q, k, v  = x θ_qkv                                          (optional RMSNorm of q and k: ``qk_norm``)
    attn     = SWA(RoPE(q), RoPE(k), v) over ``num_attn_heads`` heads, window w
    q', k'   = q ⊙ s_q + o_q,  k ⊙ s_k + o_k                     (learned per-channel scale and offset)
    q', k', v' = silu(·), split into ``num_lact_heads`` heads; q', k' L2-normalised per head, then RoPE
    lr_t     = softplus(x_t θ_lr + b_lr + softplus⁻¹(base_lr))   (batch, seq, heads, 3): one per fast matrix
    m_t      = sigmoid(x_t θ_m + b_m)                           per-token momentum (``use_momentum``)
    z        = LaCT op (``tttlm.ops.lact``) with fast weights initialised from w0, w1, w2
    y        = θ_O (attn + RMSNorm_head(z) ⊙ silu(x θ_s + b_s))  (the per-head scale: ``learnable_ttt_scale``)

RoPE is the rotate-half pairing (flash-linear-attention's ``RotaryEmbedding``, which the release uses), applied to
the fast q', k' with the attention heads' split, as the release does. Where we differ: the fast-weight op runs in
float32 or wider (the release: bf16 autocast); there is no padding mask (the models run padded rows one by one).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tttlm.layers.attention import KVCache, causal_attention
from tttlm.layers.rope import apply_rope_half, rope_angles
from tttlm.ops.lact import FORMS, GRADIENTS, LaCTState, run_lact

# the release: epsilon of its L2 norm of q', k' and of fla's RMSNorm (output norm, QK-norm)
L2_EPS = 1e-5
NORM_EPS = 1e-5


class LaCTLayerCache(NamedTuple):
    """What a LaCT layer carries between calls: the attention's KV window and the fast-weight state."""

    attention: KVCache
    fast: LaCTState


class LowRankWeight(nn.Module):
    """``W = left @ right + ½ I`` per head (heads, rows, cols): the release's ``LowRankFastWeight`` with
    ``add_identity=True``, the initial fast weight w0 or w2 of its LM configs (``w0_w2_low_rank: 32``)."""

    def __init__(self, heads: int, rows: int, cols: int, rank: int, gain: float) -> None:
        super().__init__()
        self.rank, self.gain = rank, gain
        self.left = nn.Parameter(torch.empty(heads, rows, rank))
        self.right = nn.Parameter(torch.empty(heads, rank, cols))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """left ~ N(0, gain / √rank), right ~ N(0, gain / √cols), the release's init."""
        nn.init.normal_(self.left, std=self.gain / math.sqrt(self.rank))
        nn.init.normal_(self.right, std=self.gain / math.sqrt(self.right.shape[-1]))

    def forward(self) -> Tensor:
        rows, cols = self.left.shape[1], self.right.shape[2]
        eye = torch.eye(rows, cols, dtype=self.left.dtype, device=self.left.device)
        return self.left @ self.right + 0.5 * eye


class LaCTLayer(nn.Module):
    """SWA + LaCT fast weight (module docstring). Input and output (batch, seq, hidden_size).

    Args:
        hidden_size: model width.
        num_attn_heads: attention heads (head dim hidden_size / num_attn_heads, even).
        num_lact_heads: fast-weight heads (head dim d = hidden_size / num_lact_heads; the release: 4).
        window: sliding window w of the attention (query i sees keys i − w < j ≤ i).
        chunk_size: tokens per fast-weight update (the release's LM configs: 2048, equal to the window).
        inter_multi: fast-weight hidden width / d (the release: 1).
        rope_theta: RoPE base (the release's LM configs: 1e6).
        qk_norm: RMSNorm of q and k over the whole width (the release's ``attn_qk_norm``; its configs: off).
        low_rank: rank of the low-rank-plus-identity init of w0 and w2 (``LowRankWeight``; the release's
            ``w0_w2_low_rank``: 32); None for full matrices ~ N(0, 1/d).
        fw_init_gain: the low-rank init's gain (the release: 0.5).
        base_lr: the fast-weight learning rate of a zero projection (the release: 0.001).
        use_momentum, use_muon: the op's momentum and Muon (the release's LM configs: momentum on; Muon on in
            the ``*_muon`` ones).
        learnable_ttt_scale: multiply the normalised fast-weight output by silu(x θ_s + b_s) per head.
        form: the op's form, "chunk" or "reference".
        block_size: query rows per block of the blocked attention.
        initializer_range: std of the projections' init (set by the model's init).
    """

    def __init__(
        self,
        hidden_size: int,
        num_attn_heads: int,
        num_lact_heads: int = 4,
        *,
        window: int = 2048,
        chunk_size: int = 2048,
        inter_multi: int = 1,
        rope_theta: float = 1e6,
        qk_norm: bool = False,
        low_rank: int | None = 32,
        fw_init_gain: float = 0.5,
        base_lr: float = 1e-3,
        use_momentum: bool = True,
        use_muon: bool = False,
        learnable_ttt_scale: bool = True,
        form: str = "chunk",
        block_size: int | None = None,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        for name, heads in (("num_attn_heads", num_attn_heads), ("num_lact_heads", num_lact_heads)):
            if heads < 1 or hidden_size % heads:
                raise ValueError(f"LaCT layer: hidden_size ({hidden_size}) must be a multiple of {name} ({heads})")
        if (hidden_size // num_attn_heads) % 2:
            raise ValueError(f"LaCT layer: attention head dim {hidden_size // num_attn_heads} must be even (RoPE)")
        if form not in FORMS:
            raise ValueError(f"LaCT layer: form must be one of {list(FORMS)}; got {form!r}")
        if not base_lr > 0:
            raise ValueError(f"LaCT layer: base_lr must be > 0 (the release: 0.001); got {base_lr}")
        self.hidden_size, self.num_attn_heads, self.num_lact_heads = hidden_size, num_attn_heads, num_lact_heads
        self.head_dim, self.fw_dim = hidden_size // num_attn_heads, hidden_size // num_lact_heads
        self.fw_hidden = int(self.fw_dim * inter_multi)
        self.window, self.chunk_size, self.rope_theta, self.block_size = window, chunk_size, rope_theta, block_size
        self.use_momentum, self.use_muon, self.learnable_ttt_scale = use_momentum, use_muon, learnable_ttt_scale
        self.form, self.low_rank, self.initializer_range = form, low_rank, initializer_range
        self.lr_offset = math.log(math.expm1(base_lr))  # softplus⁻¹(base_lr)
        # the trainer's inner-lr warm-up factor (tttlm.models.inner_lr_scale); LaCT's recipe has no warm-up
        self.inner_lr_scale, self.inner_lr_warmup_ratio = 1.0, None
        heads, d, hidden = num_lact_heads, self.fw_dim, self.fw_hidden

        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.q_norm = nn.RMSNorm(hidden_size, eps=NORM_EPS) if qk_norm else None
        self.k_norm = nn.RMSNorm(hidden_size, eps=NORM_EPS) if qk_norm else None
        if low_rank is None:
            self.w0 = nn.Parameter(torch.empty(heads, hidden, d))
            self.w2 = nn.Parameter(torch.empty(heads, hidden, d))
        else:
            self.w0 = LowRankWeight(heads, hidden, d, low_rank, fw_init_gain)
            self.w2 = LowRankWeight(heads, hidden, d, low_rank, fw_init_gain)
        self.w1 = nn.Parameter(torch.empty(heads, d, hidden))
        self.lr_proj = nn.Linear(hidden_size, 3 * heads)
        self.qk_scale = nn.Parameter(torch.empty(hidden_size, 2))
        self.qk_offset = nn.Parameter(torch.empty(hidden_size, 2))
        self.ttt_scale_proj = nn.Linear(hidden_size, heads) if learnable_ttt_scale else None
        self.momentum_proj = nn.Linear(hidden_size, heads) if use_momentum else None
        self.ttt_norm = nn.RMSNorm(d, eps=NORM_EPS)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The release's init of this layer's own parameters (the model's init does the projections): w1 ~
        N(0, 1/hidden); w0, w2 ~ N(0, 1/d) (full) or ``LowRankWeight``'s init; q/k scale ones, offset zeros."""
        nn.init.normal_(self.w1, std=1 / math.sqrt(self.fw_hidden))
        for w in (self.w0, self.w2):
            if isinstance(w, LowRankWeight):
                w.reset_parameters()
            else:
                nn.init.normal_(w, std=1 / math.sqrt(self.fw_dim))
        nn.init.ones_(self.qk_scale)
        nn.init.zeros_(self.qk_offset)

    def initial_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(w0, w1, w2): the initial fast weights (heads, hidden, d), (heads, d, hidden), (heads, hidden, d)."""
        w0 = self.w0() if isinstance(self.w0, LowRankWeight) else self.w0
        w2 = self.w2() if isinstance(self.w2, LowRankWeight) else self.w2
        return w0, self.w1, w2

    def forward(self, x: Tensor, cache: LaCTLayerCache | None = None) -> tuple[Tensor, LaCTLayerCache]:
        """x: (batch, seq, hidden) normalised block input; ``cache`` continues a stream. Returns (y, cache)."""
        seq = x.shape[1]
        start = 0 if cache is None else cache.attention.position
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        fast_q = q * self.qk_scale[:, 0] + self.qk_offset[:, 0]
        fast_k = k * self.qk_scale[:, 1] + self.qk_offset[:, 1]
        cos, sin = rope_angles(torch.arange(start, start + seq, device=x.device), self.head_dim, self.rope_theta)

        def rope(t: Tensor) -> Tensor:  # (batch, seq, hidden) in the attention heads' split
            return apply_rope_half(t.unflatten(-1, (self.num_attn_heads, self.head_dim)), cos, sin)

        keys, values = rope(k), v.unflatten(-1, (self.num_attn_heads, self.head_dim))
        if cache is not None:
            keys = torch.cat([cache.attention.keys, keys], dim=1)
            values = torch.cat([cache.attention.values, values], dim=1)
        attn = causal_attention(rope(q), keys, values, window=self.window, block_size=self.block_size)
        kept = keys.shape[1] - min(keys.shape[1], self.window - 1)  # a copy: a view would keep the prefill alive
        kv_cache = KVCache(keys[:, kept:].clone(), values[:, kept:].clone(), start + seq)

        def fast_heads(t: Tensor) -> Tensor:  # (batch, seq, hidden) -> (batch, seq, lact heads, d)
            return t.unflatten(-1, (self.num_lact_heads, self.fw_dim))

        fq, fk, fv = (fast_heads(F.silu(t)) for t in (fast_q, fast_k, v))
        fq, fk = (t / (t.norm(dim=-1, keepdim=True) + L2_EPS) for t in (fq, fk))
        fq, fk = (fast_heads(rope(t.flatten(-2)).flatten(-2)) for t in (fq, fk))
        # the fast weights are summed over chunks of thousands of tokens: float32 at least, also under autocast
        dtype = torch.promote_types(self.w1.dtype, torch.float32)
        lr = F.softplus(self.lr_proj(x).to(dtype) + self.lr_offset).unflatten(-1, (self.num_lact_heads, 3))
        lr = self.inner_lr_scale * lr
        momentum = None if self.momentum_proj is None else torch.sigmoid(self.momentum_proj(x).to(dtype))
        with torch.autocast(x.device.type, enabled=False):
            z, fast = run_lact(
                GRADIENTS[self.form],
                *(t.to(dtype) for t in (fq, fk, fv, lr)),
                tuple(w.to(dtype) for w in self.initial_weights()),
                momentum,
                self.chunk_size,
                self.use_muon,
                True,
                None if cache is None else cache.fast,
            )
        z = self.ttt_norm(z.to(x.dtype))
        if self.ttt_scale_proj is not None:
            z = z * F.silu(self.ttt_scale_proj(x)).unsqueeze(-1)
        y = self.o_proj(attn.flatten(-2) + z.flatten(-2))
        return y, LaCTLayerCache(kv_cache, fast)
