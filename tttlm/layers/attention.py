"""Causal self-attention, full or sliding-window, computed block by block with a bounded KV cache.

No (T × T) mask or score matrix is ever built: queries are processed in blocks of ``block_size`` rows, and each
block only sees the keys it may attend to (its window, or the whole prefix for full attention), so memory is
O(block × (block + window)) per head instead of O(T²). A prefill without a cache and with full attention (or a
window no shorter than the input) is a single ``scaled_dot_product_attention(is_causal=True)`` call.

Conventions: tensors are (batch, seq, heads, head_dim) at the boundary. A window w lets query i attend keys j with
``i − w < j ≤ i`` (w keys, itself included), the transformers/Mistral convention. RoPE uses the rotate-half
pairing (channel c with c + d/2) of Llama/Mistral by default, so attention weights convert to and from those models
as they are; ``rope_pairing="interleaved"`` is the TTT-E2E release's (see ``layers/rope.py``). ``qk_norm`` adds the
release's per-head RMSNorm of queries and keys before RoPE (as Qwen3 and OLMo 2 also do).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tttlm.layers.rope import ROPE_PAIRINGS, rope_angles

# Query rows per block: large enough that the Python loop over blocks is short even for small windows
# (32K tokens / 256 = 128 iterations per layer), small enough that a block's scores stay a few MB per head.
MIN_BLOCK_SIZE = 256


class KVCache(NamedTuple):
    """What an attention layer carries between calls.

    Attributes:
        keys, values: (batch, kept, heads, head_dim), keys after RoPE. Full attention keeps every token seen;
            a window w keeps the last w − 1 tokens (all a future query can still see), so decoding has a fixed
            cost and memory.
        position: number of tokens seen so far (the RoPE position of the next token).
    """

    keys: Tensor
    values: Tensor
    position: int


def _check_window(window: int | None) -> None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be None (full attention) or a positive integer; got {window!r}")


def causal_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int | None = None, block_size: int | None = None
) -> Tensor:
    """Causal softmax attention of the last ``Tq`` positions of a key stream, optionally with a sliding window.

    Args:
        q: (batch, Tq, heads, d) queries at stream positions ``Tk − Tq … Tk − 1``.
        k, v: (batch, Tk, heads, d) keys and values at stream positions ``0 … Tk − 1`` (a cached prefix followed
            by the keys of the queries themselves), Tk ≥ Tq.
        window: None for full causal attention, else w: query i attends keys ``i − w < j ≤ i``.
        block_size: query rows per block (default ``max(window, 256)``).

    Returns:
        (batch, Tq, heads, d), scaled by 1/√d as usual.
    """
    _check_window(window)
    num_q, num_k = q.shape[1], k.shape[1]
    past = num_k - num_q
    if past < 0:
        raise ValueError(f"attention needs at least as many keys as queries; got {num_k} keys for {num_q} queries")
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, T, d) for SDPA
    if past == 0 and (window is None or window >= num_q):
        # every key the causal mask allows is inside the window: SDPA's own causal path, no mask tensor
        return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(1, 2)
    if num_q == 1:
        # one decode step sees the last `window` keys (or all of them), no mask needed
        start = 0 if window is None else max(0, num_k - window)
        return F.scaled_dot_product_attention(qh, kh[:, :, start:], vh[:, :, start:]).transpose(1, 2)

    block = block_size or max(window or 0, MIN_BLOCK_SIZE)
    outputs = []
    for s in range(0, num_q, block):
        e = min(s + block, num_q)
        q_pos = torch.arange(past + s, past + e, device=q.device)
        k_lo = 0 if window is None else max(0, past + s - window + 1)
        k_pos = torch.arange(k_lo, past + e, device=q.device)
        allowed = k_pos[None, :] <= q_pos[:, None]
        if window is not None:
            allowed &= k_pos[None, :] > q_pos[:, None] - window
        outputs.append(
            F.scaled_dot_product_attention(
                qh[:, :, s:e], kh[:, :, k_lo : past + e], vh[:, :, k_lo : past + e], attn_mask=allowed
            )
        )
    return torch.cat(outputs, dim=2).transpose(1, 2)


def dense_attention_reference(q: Tensor, k: Tensor, v: Tensor, *, window: int | None = None) -> Tensor:
    """The readable O(Tq × Tk) reference of ``causal_attention`` (same signature): explicit mask and softmax."""
    _check_window(window)
    num_q, num_k = q.shape[1], k.shape[1]
    q_pos = torch.arange(num_k - num_q, num_k)[:, None]
    k_pos = torch.arange(num_k)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", probs, v)


class Attention(nn.Module):
    """Multi-head causal self-attention with RoPE, full or sliding-window. Input and output (batch, seq, hidden).

    ``forward(x, cache) -> (y, cache)``: the cache (``KVCache``) continues a stream; with a window it never holds
    more than ``window − 1`` tokens.

    Args:
        hidden_size: model width.
        num_heads: query heads; head dim = hidden_size / num_heads (even, for RoPE) unless ``head_dim`` is given.
        window: None (full attention) or the sliding-window length w.
        rope_theta: RoPE base.
        block_size: query rows per block in ``causal_attention``.
        qk_norm: RMSNorm (with a learned scale, no bias) over each head's query and key before RoPE; its modules
            are ``q_norm`` and ``k_norm`` (head_dim,).
        rope_pairing: ``"half"`` (Llama) or ``"interleaved"`` (the TTT reference code and the TTT-E2E release).
        eps: the QK-norm's epsilon.
        num_kv_heads: key/value heads (grouped-query attention: query head h reads key/value head
            h // (num_heads / num_kv_heads), as transformers' ``repeat_kv``); None: num_heads.
        head_dim: the width of a head, when it is not hidden_size / num_heads (Qwen3).
        qkv_bias, o_bias: biases on the q/k/v and on the output projections (Qwen2: q/k/v only).
        rope_inv_freq: (head_dim / 2,) RoPE frequencies replacing θ^(−2i/d) (a scaled RoPE); ``rope_scale``
            multiplies cos and sin (YaRN's attention factor), as transformers' rotary embeddings do.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        window: int | None = None,
        rope_theta: float = 10000.0,
        block_size: int | None = None,
        qk_norm: bool = False,
        rope_pairing: str = "half",
        eps: float = 1e-6,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        o_bias: bool = False,
        rope_inv_freq: Tensor | None = None,
        rope_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check_window(window)
        if rope_pairing not in ROPE_PAIRINGS:
            raise ValueError(f"attention: rope_pairing must be one of {sorted(ROPE_PAIRINGS)}; got {rope_pairing!r}")
        if head_dim is None and (num_heads < 1 or hidden_size % num_heads or (hidden_size // num_heads) % 2):
            raise ValueError(
                f"attention: hidden_size ({hidden_size}) must split into num_heads ({num_heads}) heads of even size"
            )
        kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if kv_heads < 1 or num_heads % kv_heads:
            raise ValueError(f"attention: num_heads ({num_heads}) must be a multiple of num_kv_heads ({kv_heads})")
        self.num_heads, self.num_kv_heads = num_heads, kv_heads
        self.head_dim = hidden_size // num_heads if head_dim is None else head_dim
        if self.head_dim % 2:
            raise ValueError(f"attention: head_dim must be even (RoPE rotates pairs); got {self.head_dim}")
        self.window, self.rope_theta, self.block_size = window, rope_theta, block_size
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=o_bias)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else None
        self.rope = ROPE_PAIRINGS[rope_pairing]
        # derived from the config (not saved with the weights), kept in float64 on the CPU whatever the module's
        # dtype and device: a plain attribute, not a buffer, so that building on the meta device leaves it intact
        self.rope_inv_freq, self.rope_scale = rope_inv_freq, rope_scale

    def forward(self, x: Tensor, cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """x: (batch, seq, hidden) normalised block input. Returns (batch, seq, hidden) and the new cache."""
        seq = x.shape[1]
        start = 0 if cache is None else cache.position
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))
        k, v = (proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim)) for proj in (self.k_proj, self.v_proj))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        positions = torch.arange(start, start + seq, device=x.device)
        cos, sin = rope_angles(positions, self.head_dim, self.rope_theta, self.rope_inv_freq)
        if self.rope_scale != 1.0:
            cos, sin = cos * self.rope_scale, sin * self.rope_scale
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        if cache is not None:
            k, v = torch.cat([cache.keys, k], dim=1), torch.cat([cache.values, v], dim=1)
        groups = self.num_heads // self.num_kv_heads
        # the cache keeps the kv heads once; each group of query heads reads its own
        kq, vq = (k, v) if groups == 1 else (k.repeat_interleave(groups, 2), v.repeat_interleave(groups, 2))
        y = causal_attention(q, kq, vq, window=self.window, block_size=self.block_size)
        if self.window is not None:
            # a copy, not a view: a view would keep the whole prefill's keys alive
            keep = k.shape[1] - min(k.shape[1], self.window - 1)
            k, v = k[:, keep:].clone(), v[:, keep:].clone()
        return self.o_proj(y.flatten(-2)), KVCache(k, v, start + seq)
