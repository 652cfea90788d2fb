"""Analytical FLOPs of a forward call of every registry architecture, one function per mixer family.

A multiply-add is 2 FLOPs. Counts are for batch 1 (they scale linearly with the batch) and for the computation the
code benchmarked here performs, with one exception stated below:

- dense: activations times weight matrices (projections, MLPs, short depthwise convolutions): 2 FLOPs per weight
  per token, whatever the context;
- mixing: the matrix products that mix tokens: attention scores and values, the TTT inner loop (the dual form
  computes the whole b × b product of a mini-batch and masks it afterwards, so that is what is counted), the chunked
  scans' products of Gated DeltaNet and Mamba-2 (transformers' reference SSD, B and C repeated per head);
- other: token mixing done elementwise or by triangular solves (the Mamba recurrences, decode-step state updates,
  Gated DeltaNet's per-chunk solve), 1 FLOP per multiply, add or exp;
- lm_head: the output projection of the positions whose logits are kept.

Norms, activations, RoPE, gates and the small elementwise parts of the chunked forms are left out (a few percent at
most). The exception: masked attention counts only the (query, key) pairs the mask lets through, as FlashAttention
style kernels compute them (PyTorch's CPU SDPA with ``is_causal`` skips the blocks above the diagonal); our blocked
sliding-window attention computes up to 2× the window's pairs, and a dense-mask implementation T × T.

``forward_flops(config, tokens, context, logits)`` gives a call of ``tokens`` new tokens after ``context`` cached
ones; ``prefill_flops_per_token``, ``decode_flops_per_token`` and ``train_flops_per_token`` are the per-token figures
the benchmarks report (training: forward × 3, the backward costing twice the forward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from transformers import LlamaConfig, PretrainedConfig

from tttlm.models.ssm.configuration import Mamba2LMConfig, MambaLMConfig
from tttlm.models.stack.configuration import StackConfig
from tttlm.models.ttt.configuration import TTTConfig


@dataclass(frozen=True)
class Flops:
    """FLOPs of one forward call, by where they go (see the module docstring)."""

    dense: int = 0
    mixing: int = 0
    other: int = 0
    lm_head: int = 0

    @property
    def total(self) -> int:
        return self.dense + self.mixing + self.other + self.lm_head

    def __add__(self, other: Flops) -> Flops:
        return Flops(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, times: int) -> Flops:
        return Flops(*(getattr(self, f.name) * times for f in fields(self)))


def attention_pairs(context: int, tokens: int, window: int | None = None) -> int:
    """(query, key) pairs of causal attention for ``tokens`` queries after ``context`` cached keys: the query at
    position p sees min(p + 1, window) keys (itself included)."""
    first, last = context + 1, context + tokens  # keys seen by the first and the last query without a window
    if window is None or last <= window:
        return (first + last) * tokens // 2
    if first >= window:
        return window * tokens
    growing = (first + window - 1) * (window - first) // 2  # queries seeing first … window − 1 keys
    return growing + window * (last - window + 1)


def attention_flops(
    hidden: int, heads: int, head_dim: int, kv_heads: int, context: int, tokens: int, window: int | None = None
) -> Flops:
    """Causal (optionally sliding-window) attention: q/k/v/o projections, then per visible (query, key) pair and
    head 2·head_dim for the score and 2·head_dim for the value."""
    projections = 2 * hidden * head_dim * (2 * heads + 2 * kv_heads) * tokens
    return Flops(dense=projections, mixing=4 * heads * head_dim * attention_pairs(context, tokens, window))


def swiglu_flops(hidden: int, intermediate: int, tokens: int) -> Flops:
    """SwiGLU MLP: gate, up and down projections."""
    return Flops(dense=6 * hidden * intermediate * tokens)


def conv_flops(channels: int, kernel: int, tokens: int) -> Flops:
    """Causal depthwise convolution."""
    return Flops(dense=2 * channels * kernel * tokens)


def ttt_chunks(context: int, tokens: int, mini_batch: int) -> list[int]:
    """Chunk lengths of a TTT call (as ``tttlm.ops.scan`` cuts it): up to the end of the mini-batch left open by
    the ``context`` tokens, then whole mini-batches, then the rest."""
    sizes, position, covered = [], context % mini_batch, 0
    while covered < tokens:
        sizes.append(min(tokens - covered, mini_batch - position))
        position = (position + sizes[-1]) % mini_batch
        covered += sizes[-1]
    return sizes


def ttt_inner_flops(layers: Sequence[tuple[int, int]], context: int, tokens: int, mini_batch: int) -> Flops:
    """The TTT inner loop of one head: dual form for a multi-token call, the step form for one token.

    ``layers``: (d_in, d_out) of the inner model's linear layers: [(d, d)] for TTT-Linear, [(d, 4d), (4d, d)] for
    TTT-MLP. Per chunk of n tokens: the keys' forward through every layer (2 n d_in d_out each) and the
    gradient's backward through all but the first; per layer the dual read ``Q W`` and the update ``Kᵀ (lr G)``
    (2 n d_in d_out each), ``Q Kᵀ`` and ``η G`` (2 n² d_in + 2 n² d_out); a chunk continuing an open mini-batch
    also reads the pending sums (2 n d_in d_out) and adds to them (d_in d_out). A closed mini-batch updates W
    (2 d_in d_out, elementwise). The step form (n = 1) forms the gradient as an outer product instead of the
    n × n products and reads ``W_s − scale·S`` elementwise (3 d_in d_out).
    """
    weights = sum(d_in * d_out for d_in, d_out in layers)
    backward = sum(d_in * d_out for d_in, d_out in layers[1:])
    flops, position = Flops(), context % mini_batch
    for n in ttt_chunks(context, tokens, mini_batch):
        mixing = 2 * n * (weights + backward) + 4 * n * weights  # keys' forward and backward; Q W; Kᵀ (lr G)
        other = 0
        if tokens == 1:  # step form: add to the pending sums, read W_s − scale·S
            other += (weights if position else 0) + 2 * weights
        else:
            mixing += sum(2 * n * n * (d_in + d_out) for d_in, d_out in layers)
            if position:  # the pending sums of the open mini-batch
                mixing += 2 * n * weights
                other += weights
        position = (position + n) % mini_batch
        if position == 0:
            other += 2 * weights
        flops += Flops(mixing=mixing, other=other)
    return flops


def ttt_flops(
    hidden: int,
    heads: int,
    inner: str,
    mini_batch: int,
    context: int,
    tokens: int,
    *,
    gate: bool = True,
    share_qk: bool = False,
    conv_kernel: int = 4,
    mlp_ratio: int = 4,
) -> Flops:
    """A TTT layer: projections (q and k, or with ``share_qk`` one projection and two depthwise convs; v, o, the
    gate, the inner learning rate), then every head's inner loop (``ttt_inner_flops``)."""
    d = hidden // heads
    layers = [(d, d)] if inner == "linear" else [(d, mlp_ratio * d), (mlp_ratio * d, d)]
    projections = (3 if share_qk else 4) + (1 if gate else 0)
    flops = Flops(dense=2 * hidden * (projections * hidden + heads) * tokens)
    if share_qk:
        flops += conv_flops(hidden, conv_kernel, tokens) * 2
    return flops + ttt_inner_flops(layers, context, tokens, mini_batch) * heads


def gated_deltanet_flops(
    hidden: int,
    heads: int,
    head_dim: int,
    v_head_dim: int,
    tokens: int,
    *,
    chunk: int = 64,
    conv_kernel: int = 4,
    recurrent: bool = False,
) -> Flops:
    """Gated DeltaNet: q/k/v/gate/α/β/o projections and three short convs; the chunkwise WY form (padded to whole
    chunks of C): per chunk and head ``Kβ Kᵀ``, ``Q Kᵀ`` (2 C² dk each), ``scores W`` (2 C² dv), ``Wk S``,
    ``Q S``, ``Kᵀ W`` (2 C dk dv each), the inverse T = (I + A)⁻¹ (a unit-triangular solve for C columns, C² each,
    counted as elementwise) and its products ``T Vβ``, ``T KβΓ`` (2 C² dv, 2 C² dk); the recurrent form (decode,
    or ``recurrent``) per token and head ``kᵀ S`` and ``qᵀ S`` (2 dk dv each) and the decayed rank-1 update
    (3 dk dv, elementwise)."""
    dk, dv = heads * head_dim, heads * v_head_dim
    flops = Flops(dense=2 * hidden * (2 * dk + 2 * dv + 2 * heads) * tokens + 2 * dv * hidden * tokens)
    flops += conv_flops(2 * dk + dv, conv_kernel, tokens)
    if recurrent or tokens == 1:
        return flops + Flops(mixing=4 * dk * v_head_dim * tokens, other=3 * dk * v_head_dim * tokens)
    chunks = math.ceil(tokens / chunk)
    mixing = chunks * heads * (6 * chunk * chunk * head_dim + 4 * chunk * chunk * v_head_dim)
    mixing += chunks * heads * 6 * chunk * head_dim * v_head_dim
    return flops + Flops(mixing=mixing, other=chunks * heads * chunk**3)


def lact_flops(
    hidden: int,
    attn_heads: int,
    lact_heads: int,
    context: int,
    tokens: int,
    *,
    window: int,
    chunk: int,
    fw_hidden_ratio: int = 1,
    low_rank: int | None = None,
    momentum: bool = True,
    scale: bool = True,
    muon: bool = False,
) -> Flops:
    """LaCT's layer (``layers/lact.py``): the qkv and output projections, the per-token learning-rate (3 per head),
    momentum and output-scale projections; SWA over ``attn_heads`` heads; per fast-weight head (width d, hidden
    h = ratio · d) and token ``18 d h`` for reading q and the gradient of the key's dot product (the release's count:
    4 for the key's forward, 8 for the backward, 6 for the query's read; a one-token segment's three gradient outer
    products, ``6 d h``, are elementwise); the low-rank initial w0, w2 once per call
    (``2 · 2 d h r``); with Muon per completed chunk and fast matrix 5 Newton-Schulz steps of ``4 m² n + 2 m³``
    (m ≤ n its sides). The weight normalisation and momentum are elementwise (left out)."""
    d = hidden // lact_heads
    h = fw_hidden_ratio * d
    per_token = 3 * lact_heads + (lact_heads if momentum else 0) + (lact_heads if scale else 0)
    flops = Flops(dense=2 * hidden * (4 * hidden + per_token) * tokens)
    flops += Flops(
        mixing=attention_flops(hidden, attn_heads, hidden // attn_heads, attn_heads, context, tokens, window).mixing
    )
    for n in ttt_chunks(context, tokens, chunk):  # segments end where a chunk does, like the op's loop
        # the gradient of a one-token segment is three outer products: elementwise, not a matrix product
        flops += Flops(
            mixing=(18 if n > 1 else 12) * d * h * n * lact_heads, other=0 if n > 1 else 6 * d * h * lact_heads
        )
    if low_rank is not None:
        flops += Flops(dense=2 * 2 * lact_heads * h * low_rank * d)
    if muon:
        updates = (context + tokens) // chunk - context // chunk
        small, large = min(d, h), max(d, h)
        flops += Flops(mixing=updates * lact_heads * 3 * 5 * (4 * small * small * large + 2 * small**3))
    return flops


def mamba_flops(hidden: int, d_inner: int, state: int, dt_rank: int, tokens: int, *, conv_kernel: int = 4) -> Flops:
    """Mamba (selective scan): in/x/dt/out projections and the depthwise conv; per token and channel of d_inner
    the discretisation exp(Δ A) and Δ B u and the recurrence (6 × state, elementwise) and the readout C h
    (2 × state, a product)."""
    dense = 2 * tokens * (hidden * 2 * d_inner + d_inner * (dt_rank + 2 * state) + dt_rank * d_inner + d_inner * hidden)
    flops = Flops(dense=dense) + conv_flops(d_inner, conv_kernel, tokens)
    return flops + Flops(mixing=2 * d_inner * state * tokens, other=6 * d_inner * state * tokens)


def mamba2_flops(
    hidden: int,
    heads: int,
    head_dim: int,
    groups: int,
    state: int,
    tokens: int,
    *,
    chunk: int = 256,
    conv_kernel: int = 4,
) -> Flops:
    """Mamba-2 (SSD): in/out projections and the conv over x, B, C; the chunked scan of transformers' reference
    (padded to whole chunks of L, B and C repeated per head): per chunk and head ``C Bᵀ`` (2 L² N), the masked
    product with x (2 L² P), the chunk's state and its readout (2 L N P each), and the state passing between the
    c chunks as one (c+1) × (c+1) product (2 (c+1)² P N per head); a single token takes the recurrent step
    (readout 2 P N, discretisation and update 6 P N elementwise, per head)."""
    inner = heads * head_dim
    projections = 2 * tokens * (hidden * (2 * inner + 2 * groups * state + heads) + inner * hidden)
    flops = Flops(dense=projections) + conv_flops(inner + 2 * groups * state, conv_kernel, tokens)
    if tokens == 1:
        return flops + Flops(mixing=2 * inner * state, other=6 * inner * state)
    chunks = math.ceil(tokens / chunk)
    per_chunk = 2 * chunk * chunk * (state + head_dim) + 4 * chunk * state * head_dim
    mixing = heads * (chunks * per_chunk + 2 * (chunks + 1) ** 2 * head_dim * state)
    return flops + Flops(mixing=mixing)


def lm_head_flops(hidden: int, vocab: int, logits: int) -> Flops:
    return Flops(lm_head=2 * hidden * vocab * logits)


def _ttt_model(config: TTTConfig, context: int, tokens: int) -> Flops:
    share_qk = config.backbone == "mamba"
    layer = ttt_flops(
        config.hidden_size, config.num_attention_heads, config.layer_type, config.mini_batch_size, context, tokens,
        gate=config.use_gate, share_qk=share_qk, conv_kernel=config.conv_kernel,
    )  # fmt: skip
    if config.pre_conv:
        layer += conv_flops(config.hidden_size, config.conv_kernel, tokens)
    layer += swiglu_flops(config.hidden_size, config.intermediate_size, tokens)
    return layer * config.num_hidden_layers


def _llama_model(config: LlamaConfig, context: int, tokens: int) -> Flops:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layer = attention_flops(
        config.hidden_size, config.num_attention_heads, head_dim, config.num_key_value_heads, context, tokens
    )
    return (layer + swiglu_flops(config.hidden_size, config.intermediate_size, tokens)) * config.num_hidden_layers


def _stack_mixer(config: StackConfig, mixer: str, context: int, tokens: int) -> Flops:
    hidden, heads = config.hidden_size, config.num_attention_heads
    if mixer in ("full_attention", "sliding_attention"):
        window = config.sliding_window if mixer == "sliding_attention" else None
        return attention_flops(hidden, heads, hidden // heads, heads, context, tokens, window)
    if mixer == "gated_deltanet":
        return gated_deltanet_flops(
            hidden, config.gdn_num_heads, config.gdn_head_dim, config.gdn_expand_v * config.gdn_head_dim, tokens,
            chunk=config.gdn_chunk_size, conv_kernel=config.conv_kernel, recurrent=config.gdn_form == "recurrent",
        )  # fmt: skip
    if mixer == "mamba2":
        return mamba2_flops(
            hidden, config.mamba2_expand * hidden // config.mamba2_head_dim, config.mamba2_head_dim,
            config.mamba2_n_groups, config.mamba2_state_size, tokens, chunk=config.mamba2_chunk_size,
            conv_kernel=config.conv_kernel,
        )  # fmt: skip
    if mixer == "short_conv":
        return conv_flops(hidden, config.conv_kernel, tokens)
    if mixer == "lact":
        return lact_flops(
            hidden, heads, config.lact_num_heads, context, tokens, window=config.sliding_window,
            chunk=config.lact_chunk_size, fw_hidden_ratio=config.lact_inter_multi, low_rank=config.lact_low_rank,
            momentum=config.lact_use_momentum, scale=config.lact_learnable_ttt_scale, muon=config.lact_use_muon,
        )  # fmt: skip
    if mixer == "ttt":
        return ttt_flops(
            hidden, config.ttt_num_heads, config.ttt_layer_type, config.ttt_mini_batch_size, context, tokens,
            gate=config.ttt_use_gate,
        )  # fmt: skip
    raise ValueError(f"no FLOP formula for the stack mixer {mixer!r}")


def _stack_model(config: StackConfig, context: int, tokens: int) -> Flops:
    mlp = swiglu_flops(config.hidden_size, config.intermediate_size, tokens)
    flops = Flops()
    for mixers in config.layer_mixers:
        for mixer in mixers:
            flops += _stack_mixer(config, mixer, context, tokens)
        flops += mlp
    return flops


def _mamba_model(config: MambaLMConfig, context: int, tokens: int) -> Flops:
    layer = mamba_flops(
        config.hidden_size, config.intermediate_size, config.state_size, config.time_step_rank, tokens,
        conv_kernel=config.conv_kernel,
    )  # fmt: skip
    return layer * config.num_hidden_layers


def _mamba2_model(config: Mamba2LMConfig, context: int, tokens: int) -> Flops:
    layer = mamba2_flops(
        config.hidden_size, config.num_heads, config.head_dim, config.n_groups, config.state_size, tokens,
        chunk=config.chunk_size, conv_kernel=config.conv_kernel,
    )  # fmt: skip
    return layer * config.num_hidden_layers


# config class -> FLOPs of the blocks of a call (context, tokens); exact classes, the registry's
_FAMILIES: dict[type, Callable[..., Flops]] = {
    TTTConfig: _ttt_model,
    LlamaConfig: _llama_model,
    StackConfig: _stack_model,
    MambaLMConfig: _mamba_model,
    Mamba2LMConfig: _mamba2_model,
}


def has_flop_formula(config: PretrainedConfig) -> bool:
    """Whether ``forward_flops`` knows the model ``config`` describes (every registry arch but ttt-e2e)."""
    return type(config) in _FAMILIES


def forward_flops(config: PretrainedConfig, tokens: int, context: int = 0, logits: int = 1) -> Flops:
    """FLOPs of ``model(input_ids (1, tokens), past_key_values=<cache of context tokens>, logits_to_keep=logits)``
    for the model ``config`` describes (a registry config: ``tttlm.models.registry.make_config(arch, size)``)."""
    for name, value, low in (("tokens", tokens, 1), ("context", context, 0), ("logits", logits, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if logits > tokens:
        raise ValueError(f"logits ({logits}) cannot exceed tokens ({tokens})")
    family = _FAMILIES.get(type(config))
    if family is None:
        known = ", ".join(cls.__name__ for cls in _FAMILIES)
        raise ValueError(f"no FLOP formula for {type(config).__name__}; known configs: {known}")
    return family(config, context, tokens) + lm_head_flops(config.hidden_size, config.vocab_size, logits)


def prefill_flops_per_token(config: PretrainedConfig, context: int, chunk_size: int | None = None) -> float:
    """Forward FLOPs per token of a prefill of ``context`` tokens, in one call or in calls of ``chunk_size`` tokens
    that continue the cache, each keeping the logits of its last position only."""
    step = chunk_size or context
    total = sum(forward_flops(config, min(step, context - start), start, 1).total for start in range(0, context, step))
    return total / context


def decode_flops_per_token(config: PretrainedConfig, context: int) -> float:
    """FLOPs of decoding one token after ``context`` cached tokens."""
    return float(forward_flops(config, 1, context, 1).total)


def train_flops_per_token(config: PretrainedConfig, seq_len: int) -> float:
    """Training FLOPs per token on sequences of ``seq_len``: 3 × the forward with logits at every position."""
    return 3 * forward_flops(config, seq_len, 0, seq_len).total / seq_len
