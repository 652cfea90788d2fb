"""TTT-E2E: a sliding-window Transformer that keeps learning at test time by next-token prediction.

Block i, as the release computes it (``ttt/model/transformer.py`` ``Block``; every norm an RMSNorm without bias,
``pre``/``post`` each sub-block's own; ``post`` is skipped with ``post_norm=False``):

    h ← h + Conv(pre_c(h))                       only with ``short_conv`` (ours, Zoology's short conv; no post-norm)
    h ← h + post(SWA(pre(h)))                    window k, QK-norm before RoPE (``attention.py`` ``SWA``)
    h ← h + post'(PrimeSwiGLU(pre'(h); W))       only the last ``num_updated_layers`` blocks (``suffix_len``)
    h ← h + post''(SwiGLU(pre''(h)))             the static MLP, never changed by the inner loop

then the final RMSNorm (``ln_f``) and the LM head tied to the embedding. The prime MLPs' weights W (gate, up,
down; not their norms: the release's ``spec_inner`` is ``**.suffix_blocks.feed_forward_prime.**``) are the fast
weights. The input is cut into mini-batches of b tokens aligned to absolute stream positions; mini-batch i is
processed with W_i and then

    W_{i+1} = W_i − η · min(1, c / ‖g_i‖) · g_i,    g_i = ∇_W ℓ_i(W_i)

per sequence (``inner_loop.sgd_step``; ‖·‖ the global norm over all prime weights of all updated blocks, optax's
``clip_by_global_norm``), where ℓ_i is the mean next-token loss over mini-batch i's positions whose target is not
BOS (``mask_bos_targets``). W_0 is the prime MLPs' parameters, learned in the outer loop; η is ``inner_lr``
(release: 1) times the trainer's warm-up scale (``set_inner_lr_scale``; the release's ``get_ilr_multiplier``).

Decisions (see also docs/ARCHITECTURE.md, "TTT-E2E"):

* Targets. Position t of mini-batch i predicts token t + 1, so its last position's target is the first token of
  mini-batch i + 1, as in the release (whose chunks of ``target_tokens`` are the inputs shifted by one): b = 1 is
  online gradient descent. The step after mini-batch i is therefore taken when that next token is known; it
  changes only the outputs from that token on, so the model stays causal. A mini-batch that is incomplete, or
  complete but last in the input, produces its outputs with W_i and its step is left open in the cache
  (``E2ECache.open``) until the mini-batch completes and the next token arrives; then its step is taken by
  recomputing the updated blocks on it, exactly.
* Where gradients go. The blocks below the first updated block run once over the whole input, outside the inner
  loop (the release's ``prefix_call``); the inner gradient is taken with respect to the prime weights only, so its
  backward starts at the logits and stops at the first updated block's input. The outer gradient is the exact
  gradient of the outer loss (``meta_gradient="exact"``: the inner gradients are built with ``create_graph``, and
  the outer backward flows through them into W_0 and every parameter they depend on, as ``jax.grad`` of the
  release's ``loss_for_sequence``). ``meta_gradient="first_order"`` (ours) treats the inner gradients as constants.
  Inside one mini-batch one forward serves both losses: the outer loss and the inner loss read the same logits.
* The outer loss (``loss_reduction="mini_batch"``, the release's): the mean over mini-batches of each mini-batch's
  masked mean, each mini-batch scored before its own step.
* Inference (``torch.is_grad_enabled()`` False, including ``inference_mode``): the inner gradient is still taken
  (autograd switched on locally), first-order only, on detached copies; nothing is kept for a second-order pass.
* Attention keeps keys after RoPE at their absolute positions; the release keeps them before RoPE and rotates the
  window by positions relative to it. RoPE depends only on position differences, so the two agree up to rounding.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast

from tttlm.layers.attention import Attention
from tttlm.layers.conv import CausalConv
from tttlm.layers.mlp import SwiGLU
from tttlm.layers.rope import scaled_rope_frequencies
from tttlm.models.base import (
    TIED_LM_HEAD,
    CausalLMHead,
    StatefulPreTrainedModel,
    check_input_ids,
    check_labels,
    forward_by_row,
    kept_positions,
    real_tokens,
    resolve_cache,
    runs_by_row,
)
from tttlm.models.cache import map_tensors
from tttlm.models.e2e.cache import E2EBlockCache, E2EBlockState, E2ECache, OpenMiniBatch
from tttlm.models.e2e.configuration import E2EConfig, resolve_remat
from tttlm.models.e2e.inner_loop import (
    autograd_ready,
    fast_swiglu,
    inner_grad_mode,
    inner_loss,
    log_probabilities,
    mini_batch_nll,
    outer_loss,
    per_mini_batch,
    sgd_step,
    shifted_targets,
    token_nll,
)
from tttlm.models.e2e.remat import remat
from tttlm.models.hf_compat import pop_cache, with_cache
from tttlm.models.inner_lr_scale import InnerLrScaled

FastWeights = tuple[Tensor, Tensor, Tensor]
# the release's pre-training recipe: ilr_init 0.1 with inner lr 1 (``pretrain-*-e2e.yaml``); extension runs at 1
RELEASE_INNER_LR_WARMUP_RATIO = 0.1


class PrimeMLP(nn.Module):
    """The updated sub-block of a block: ``post(SwiGLU(norm(x); W))``; its parameters hold W_0 and the norms.

    The norms are static (outer parameters). W_0 is ``gate`` (d, m), ``up`` (d, m), ``down`` (m, d), in the
    (in, out) layout of the fast weights (``inner_loop``; the release's layout, the transpose of
    ``nn.Linear.weight``), initialised N(0, initializer_range²) like every linear layer. ``log_lr`` (3,), if the
    step size is learnable (ours), holds log η for gate, up and down.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        *,
        eps: float,
        post_norm: bool,
        inner_lr: float,
        learnable_lr: bool,
        initializer_range: float,
    ) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(hidden_size, eps=eps)
        self.post_norm = nn.RMSNorm(hidden_size, eps=eps) if post_norm else nn.Identity()
        self.gate = nn.Parameter(torch.empty(hidden_size, intermediate_size))
        self.up = nn.Parameter(torch.empty(hidden_size, intermediate_size))
        self.down = nn.Parameter(torch.empty(intermediate_size, hidden_size))
        self.inner_lr = inner_lr
        self.initializer_range = initializer_range
        self.log_lr = nn.Parameter(torch.empty(3)) if learnable_lr else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W_0 ~ N(0, initializer_range²), step sizes at ``inner_lr`` (the norm is initialised as any RMSNorm)."""
        for weight in (self.gate, self.up, self.down):
            nn.init.normal_(weight, mean=0.0, std=self.initializer_range)
        if self.log_lr is not None:
            nn.init.constant_(self.log_lr, math.log(self.inner_lr))

    def initial_weights(self, batch: int) -> FastWeights:
        """W_0 for ``batch`` sequences: (B, d, m), (B, d, m), (B, m, d) views, at least float32 (small steps on
        half-precision weights would round away)."""
        dtype = torch.promote_types(self.gate.dtype, torch.float32)
        gate, up, down = (p.to(dtype) for p in (self.gate, self.up, self.down))
        return gate.expand(batch, *gate.shape), up.expand(batch, *up.shape), down.expand(batch, *down.shape)

    def step_sizes(self, scale: float = 1.0) -> list[Tensor | float]:
        """η for gate, up and down, times ``scale`` (the warm-up): ``exp(log_lr)`` (differentiable) or the
        configured float."""
        if self.log_lr is None:
            return [self.inner_lr * scale] * 3
        return list((self.log_lr.exp() * scale).unbind())

    def forward(self, x: Tensor, weights: FastWeights) -> Tensor:
        """x: (B, n, d) block stream; weights: the current fast weights. Returns the residual update (B, n, d)."""
        return self.post_norm(fast_swiglu(self.norm(x).to(weights[0].dtype), weights).to(x.dtype))


class E2EBlock(nn.Module):
    """The release's block: ``h + post(SWA(pre(h)))``, in updated blocks ``h + PrimeMLP(h; W)``, then
    ``h + post(SwiGLU(pre(h)))`` (with ``prime_position="after_static"``, ours, the prime sub-block comes last);
    with ``short_conv`` (ours) first ``h + CausalConv(RMSNorm(h))``.

    ``forward(x, state, fast) -> (x, state)``; x: (batch, seq, hidden), state: an ``E2EBlockState``. Parameter
    names: ``conv_norm``, ``conv`` (``short_conv`` only), ``attn_norm``, ``attn`` (with ``q_norm``/``k_norm``),
    ``attn_post_norm``, ``prime`` (``norm``, ``gate``, ``up``, ``down``, ``post_norm``), ``ffn_norm``, ``mlp``,
    ``ffn_post_norm``; ``models/e2e/release.py`` maps them to the release's (which has no conv).
    ``rope``: the attention's RoPE frequency arguments (``_scaled_rope``, computed once per model).
    """

    def __init__(self, config: E2EConfig, layer_idx: int, rope: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.layer_idx = layer_idx
        self.updated = layer_idx >= config.first_updated_layer
        self.prime_first = config.prime_position == "before_static"
        # off: no conv modules at all, so the parameters and the state dict are the release's
        self.conv_norm = nn.RMSNorm(hidden, eps=eps) if config.short_conv else None
        self.conv = CausalConv(hidden, config.conv_kernel) if config.short_conv else None
        self.attn_norm = nn.RMSNorm(hidden, eps=eps)
        self.attn = Attention(
            hidden,
            config.num_attention_heads,
            window=config.sliding_window,
            rope_theta=config.rope_theta,
            block_size=config.attention_block_size,
            qk_norm=config.qk_norm,
            rope_pairing=config.rope_pairing,
            eps=eps,
            num_kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            qkv_bias=config.attention_qkv_bias,
            o_bias=config.attention_o_bias,
            **rope,
        )
        # post_norm=False: identities (no parameters), so the sub-blocks read the same either way
        self.attn_post_norm = nn.RMSNorm(hidden, eps=eps) if config.post_norm else nn.Identity()
        self.ffn_norm = nn.RMSNorm(hidden, eps=eps)
        width = config.updated_intermediate_size if self.updated else config.intermediate_size
        self.mlp = SwiGLU(hidden, width)
        self.ffn_post_norm = nn.RMSNorm(hidden, eps=eps) if config.post_norm else nn.Identity()
        self.prime = (
            PrimeMLP(
                hidden,
                config.prime_intermediate_size,
                eps=eps,
                post_norm=config.post_norm,
                inner_lr=config.inner_lr,
                learnable_lr=config.inner_lr_learnable,
                initializer_range=config.initializer_range,
            )
            if self.updated
            else None
        )

    def forward(
        self, x: Tensor, state: E2EBlockState | None = None, fast: FastWeights | None = None
    ) -> tuple[Tensor, E2EBlockState]:
        """x: (batch, seq, hidden); ``state`` continues a stream (None: its start); ``fast`` (updated blocks only):
        the prime MLP's current weights. Returns (batch, seq, hidden) and the new state."""
        conv = None
        if self.conv is not None:
            # Zoology's short conv has no post-norm (as in the stack models' blocks)
            h, conv = self.conv(self.conv_norm(x), None if state is None else state.conv)
            x = x + h
        h, kv = self.attn(self.attn_norm(x), None if state is None else state.attn)
        x = x + self.attn_post_norm(h)
        if self.prime is not None:
            if fast is None:
                raise ValueError(f"block {self.layer_idx} is updated at test time: pass its fast weights")
            if self.prime_first:
                x = x + self.prime(x, fast)
        x = x + self.ffn_post_norm(self.mlp(self.ffn_norm(x)))
        if self.prime is not None and not self.prime_first:
            x = x + self.prime(x, fast)
        return x, E2EBlockState(kv, conv)


def _scaled_rope(config: E2EConfig) -> dict[str, Any]:
    """``Attention``'s RoPE frequency arguments for a scaled RoPE (``config.scaled_rope``), else none."""
    if config.scaled_rope is None:
        return {}
    inv_freq, factor = scaled_rope_frequencies(
        config.scaled_rope,
        head_dim=config.head_dim or config.hidden_size // config.num_attention_heads,
        theta=config.rope_theta,
        max_position_embeddings=config.max_position_embeddings,
    )
    return {"rope_inv_freq": inv_freq, "rope_scale": factor}


@dataclass
class E2EModelOutput(BaseModelOutputWithPast):
    """``BaseModelOutputWithPast`` plus the kept ``logits`` (batch, kept, vocab) (the inner loop needs the head),
    ``stream_start``, the stream position of the call's first token (the mini-batches are aligned to it), and with
    ``labels`` the outer loss's pieces scored inside the inner steps: ``outer_sums`` and ``outer_counts`` (batch,
    mini-batches of the call), each mini-batch's summed NLL and count of scored positions (``outer_loss``)."""

    logits: Tensor | None = None
    stream_start: int | None = None
    outer_sums: Tensor | None = None
    outer_counts: Tensor | None = None


class _Step(NamedTuple):
    """What one mini-batch's pass through the updated blocks gives (``E2EModel._learn``)."""

    normed: Tensor  # (B, b, d) the final normed hidden states
    logits: Tensor  # (B, kept, vocab) the logits of the kept positions
    states: list[E2EBlockState]  # the updated blocks' states after it
    fast: list[FastWeights]  # W_{i+1}
    outs: list[Tensor]  # every updated block's output (B, b, d)
    outer_sum: Tensor | None  # (B,) the outer loss's NLL summed over its scored positions (None: none asked)


@dataclass
class _Stream:
    """The updated blocks' state while a forward call walks through the mini-batches (see ``E2EBlockCache``)."""

    states: list[E2EBlockState | None]
    fast: list[FastWeights | None]
    start_states: list[E2EBlockState | None]
    open: OpenMiniBatch | None

    @property
    def open_tokens(self) -> int:
        return 0 if self.open is None else self.open.ids.shape[1]


class E2EPreTrainedModel(StatefulPreTrainedModel):
    """Weight init, checkpointing support and the config class shared by the TTT-E2E models.
    ``gradient_checkpointing_enable()`` sets ``E2EModel.remat`` to "all" in training: each block below the first
    updated one checkpointed (with the given ``use_reentrant``) and every inner step rematerialised (``e2e/remat.py``:
    the step back-propagates itself, which torch.utils.checkpoint does not serve well)."""

    config_class = E2EConfig
    _no_split_modules: ClassVar[list[str]] = ["E2EBlock"]
    self_initialising = (PrimeMLP, CausalConv)


class E2EModel(E2EPreTrainedModel):
    """Embedding, ``num_hidden_layers`` × ``E2EBlock``, the final RMSNorm and the inner loop.

    The inner loss needs the LM head, so ``forward`` takes it as an argument (``E2EForCausalLM`` passes its own);
    this is why only ``AutoModelForCausalLM`` is registered for this model type.
    """

    def __init__(self, config: E2EConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        rope = _scaled_rope(config)  # one set of frequencies for every block
        self.layers = nn.ModuleList([E2EBlock(config, i, rope) for i in range(config.num_hidden_layers)])
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        # the trainer's warm-up of the inner step size (``InnerLrScaled.set_inner_lr_scale``): a schedule, not a
        # weight, so not saved; the release's pre-training recipe starts it at ilr_init / lr = 0.1
        self.inner_lr_scale = 1.0
        self.inner_lr_warmup_ratio = RELEASE_INNER_LR_WARMUP_RATIO
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @property
    def _ignored_target(self) -> int | None:
        """The target id the inner loss leaves out (BOS, with ``mask_bos_targets``), or None."""
        return self.config.bos_token_id if self.config.mask_bos_targets else None

    @property
    def updated_blocks(self) -> list[E2EBlock]:
        return list(self.layers[self.config.first_updated_layer :])

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        past_key_values: E2ECache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        lm_head: nn.Module | None = None,
        logits_to_keep: int | Tensor = 0,
        labels: Tensor | None = None,
        **kwargs: Any,
    ) -> E2EModelOutput | tuple:
        """Run the model on ``input_ids`` (batch, seq), continuing ``past_key_values`` if given.

        Args:
            input_ids: (batch, seq) token ids (required: the inner loss predicts them; embeddings are refused).
            attention_mask: 0 marks padding: a padded batch runs row by row, each row's inner loop learning from its
                own real tokens only (``base.forward_by_row``).
            past_key_values: an ``E2ECache`` from an earlier call, updated in place (or passed as ``cache``).
            use_cache: return the cache (default: when one is given, or ``config.use_cache`` outside training).
            output_hidden_states: also return the embeddings and every block's output.
            lm_head: the LM head (hidden → vocab) the inner loss reads the logits from.
            logits_to_keep: 0 for all positions, k > 0 for the last k, or a 1-D tensor of positions.
            labels: (batch, seq) target ids (position t is scored against ``labels[:, t + 1]``, -100 not counted;
                the caller masks BOS targets): each mini-batch's outer loss is scored inside its own inner step
                from the logits it computes anyway (``outer_sums``, ``outer_counts``), so no log-probabilities or
                gradients over the whole call exist at once. A padded call, which runs row by row, ignores them.

        Returns:
            ``last_hidden_state`` (batch, seq, hidden) after the final norm, ``logits`` (batch, kept, vocab),
            the cache (see ``hf_compat.output_cache``), ``hidden_states``, and with labels ``outer_sums`` and
            ``outer_counts``.
        """
        past_key_values = pop_cache(past_key_values, kwargs)
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.return_dict
        if lm_head is None:
            raise TypeError("E2EModel.forward needs lm_head (the inner loss reads logits); use E2EForCausalLM")
        if inputs_embeds is not None or input_ids is None:
            raise ValueError(
                "ttt-e2e needs input_ids (batch, seq): its inner loop trains on predicting those tokens, so "
                "inputs_embeds cannot be used"
            )
        check_input_ids(input_ids, config.vocab_size)
        batch, seq = input_ids.shape
        real = real_tokens(attention_mask, batch, seq)
        cache, use_cache = resolve_cache(self, past_key_values, E2ECache, batch, use_cache)
        start = 0 if cache is None else cache.seen_tokens
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(
                f"labels must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(labels.shape)}"
            )
        outer_sums = outer_counts = None
        if runs_by_row(real, cache):
            # each row's inner loop learns from its own real tokens only (see base.forward_by_row)
            fields, cache_out = forward_by_row(
                self, real, cache, {"input_ids": input_ids}, use_cache, output_hidden_states, lm_head=lm_head
            )
            normed, hidden_states = fields["last_hidden_state"], fields.get("hidden_states")
            logits = fields["logits"][:, kept_positions(logits_to_keep)]
        else:
            outer_targets = None if labels is None else shifted_targets(labels).to(input_ids.device)
            normed, hidden_states, logits, outer_sums = self._stream_call(
                input_ids, cache, lm_head, logits_to_keep, output_hidden_states, outer_targets
            )
            if outer_targets is not None:
                outer_counts = per_mini_batch(outer_targets != -100, start, config.mini_batch_size).sum(-1)
            cache_out = cache if use_cache else None
        if not return_dict:
            return tuple(v for v in (normed, cache_out, hidden_states, logits) if v is not None)
        return with_cache(
            E2EModelOutput,
            cache_out,
            last_hidden_state=normed,
            hidden_states=hidden_states,
            logits=logits,
            stream_start=start,
            outer_sums=outer_sums,
            outer_counts=outer_counts,
        )

    def _stream_call(
        self,
        input_ids: Tensor,
        cache: E2ECache | None,
        lm_head: nn.Module,
        logits_to_keep: int | Tensor,
        output_hidden_states: bool,
        outer_targets: Tensor | None,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None, Tensor, Tensor | None]:
        """The blocks on (batch, seq) ids, continuing ``cache`` (updated in place): (normed hidden states, every
        block's outputs or None, the kept logits, the outer loss's sums per mini-batch (batch, mini-batches) when
        ``outer_targets`` (batch, seq) are given, else None)."""
        config = self.config
        seq = input_ids.shape[1]
        hidden = self.embed_tokens(input_ids)
        all_hidden = [hidden] if output_hidden_states else None
        first = config.first_updated_layer
        remat_blocks = self.remat == "all" and torch.is_grad_enabled()
        # gradient_checkpointing_enable's function (its use_reentrant), else the release's remat_prefix_block
        checkpoint_block = self._gradient_checkpointing_func if self.gradient_checkpointing else _checkpoint
        for i in range(first):
            block = self.layers[i]
            state = None if cache is None or cache.blocks[i] is None else cache.blocks[i].state
            if remat_blocks:
                hidden, state = checkpoint_block(block.__call__, hidden, state)
            else:
                hidden, state = block(hidden, state)
            if cache is not None:
                cache.blocks[i] = E2EBlockCache(state)
            if all_hidden is not None:
                all_hidden.append(hidden)

        stream = self._stream_from(cache)
        collect: list[list[Tensor]] | None = [[] for _ in self.updated_blocks] if all_hidden is not None else None
        normed, logits, outer_sums = self._updated_blocks_forward(
            hidden, input_ids, stream, lm_head, logits_to_keep, collect, outer_targets
        )
        if collect is not None:
            all_hidden.extend(torch.cat(pieces, dim=1) for pieces in collect)
        if cache is not None:
            for j, block in enumerate(self.updated_blocks):
                start = stream.start_states[j] if stream.open is not None else None
                cache.blocks[block.layer_idx] = E2EBlockCache(stream.states[j], stream.fast[j], start)
            cache.open = stream.open
            cache.seen_tokens += seq
        return normed, None if all_hidden is None else tuple(all_hidden), logits, outer_sums

    def _stream_from(self, cache: E2ECache | None) -> _Stream:
        blocks = [None if cache is None else cache.blocks[b.layer_idx] for b in self.updated_blocks]
        return _Stream(
            states=[None if c is None else c.state for c in blocks],
            fast=[None if c is None else c.fast for c in blocks],
            start_states=[None if c is None else c.start_state for c in blocks],
            open=None if cache is None else cache.open,
        )

    def _updated_blocks_forward(
        self,
        x: Tensor,
        ids: Tensor,
        stream: _Stream,
        lm_head: nn.Module,
        logits_to_keep: int | Tensor,
        collect: list[list[Tensor]] | None,
        outer_targets: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Walk the updated blocks through the input mini-batch by mini-batch, taking the inner steps.

        Args:
            x: (B, n, d) output of the blocks below (the updated blocks' input).
            ids: (B, n) token ids (targets of the inner loss).
            stream: the updated blocks' state, advanced in place.
            lm_head, logits_to_keep: as in ``forward``.
            collect: per updated block, a list receiving its outputs (for ``output_hidden_states``), or None.
            outer_targets: (B, n) the outer loss's target of each position (-100: not scored), or None.

        Returns:
            normed final hidden states (B, n, d), the kept logits (B, kept, vocab), and with ``outer_targets``
            the outer loss's NLL summed per mini-batch of the call (B, G), else None.
        """
        b = self.config.mini_batch_size
        n = ids.shape[1]
        select, reorder = _kept_positions(logits_to_keep, n, ids.device)
        normed_parts, logit_parts, outer_parts = [], [], []
        pos = 0
        while pos < n:
            if stream.open_tokens == b:
                # the open mini-batch is complete and its last target has arrived: take its step (its outputs and
                # outer loss came with the call that opened it)
                targets = torch.cat([stream.open.ids[:, 1:], ids[:, pos : pos + 1]], dim=1)
                stream.fast = self._learn(stream.open.inputs, stream.start_states, stream.fast, targets, lm_head).fast
                stream.open = None
                continue
            opened = stream.open_tokens
            m = min(b - opened, n - pos)
            segment = x[:, pos : pos + m]
            keep = select(pos, pos + m)
            scored = None if outer_targets is None else outer_targets[:, pos : pos + m]
            if opened == 0 and m == b and pos + m < n:
                # a whole mini-batch and the token after it: one forward serves the outputs and both losses
                step = self._learn(
                    segment, stream.states, stream.fast, ids[:, pos + 1 : pos + m + 1], lm_head, scored, keep
                )
                normed, logits, stream.states, stream.fast, outs, outer_sum = step
            else:
                # outputs now with W_i; the step waits for the rest of the mini-batch and the token after it
                if opened == 0:
                    stream.start_states = list(stream.states)
                    # copies, not views: a view would keep the whole call's hidden states alive in the cache
                    stream.open = OpenMiniBatch(segment.clone(), ids[:, pos : pos + m].clone())
                else:
                    stream.open = OpenMiniBatch(
                        torch.cat([stream.open.inputs, segment], dim=1),
                        torch.cat([stream.open.ids, ids[:, pos : pos + m]], dim=1),
                    )
                h, stream.states, outs = self._blocks(segment, stream.states, self._weights(stream.fast, x.shape[0]))
                normed = self.norm(h)
                if scored is None:
                    logits, outer_sum = lm_head(normed[:, keep]), None
                else:
                    full = lm_head(normed)
                    logits, outer_sum = _kept(full, keep), token_nll(log_probabilities(full), scored).sum(1)
            normed_parts.append(normed)
            logit_parts.append(logits)
            outer_parts.append(outer_sum)
            if collect is not None:
                for pieces, out in zip(collect, outs, strict=True):
                    pieces.append(out)
            pos += m
        logits = torch.cat(logit_parts, dim=1)
        outer_sums = None if outer_targets is None else torch.stack(outer_parts, dim=1)
        return torch.cat(normed_parts, dim=1), logits if reorder is None else logits[:, reorder], outer_sums

    def _weights(self, fast: list[FastWeights | None], batch: int) -> list[FastWeights]:
        """The current fast weights of every updated block (W_0 where no step has been taken yet)."""
        return [
            w if w is not None else block.prime.initial_weights(batch)
            for w, block in zip(fast, self.updated_blocks, strict=True)
        ]

    def _blocks(
        self, x: Tensor, states: list[E2EBlockState | None], weights: list[FastWeights]
    ) -> tuple[Tensor, list[E2EBlockState], list[Tensor]]:
        """The updated blocks on x (B, m, d) from their states with the given fast weights: (output (B, m, d), new
        states, every block's output (B, m, d))."""
        new_states, outs = [], []
        for block, state, w in zip(self.updated_blocks, states, weights, strict=True):
            x, state = block(x, state, w)
            new_states.append(state)
            outs.append(x)
        return x, new_states, outs

    @property
    def remat(self) -> str:
        """What a forward with autograd on rematerialises: "all" after ``gradient_checkpointing_enable()`` in
        training mode, else ``E2EConfig.remat`` ("auto" resolved by the weights' device)."""
        if self.gradient_checkpointing and self.training:
            return "all"
        return resolve_remat(self.config.remat, self.embed_tokens.weight.device.type)

    def _learn(
        self,
        x: Tensor,
        states: list[E2EBlockState | None],
        fast: list[FastWeights | None],
        targets: Tensor,
        lm_head: nn.Module,
        outer_targets: Tensor | None = None,
        keep: slice | Tensor = slice(None),
    ) -> _Step:
        """One mini-batch with its inner step: forward with W_i, inner loss, gradient, W_{i+1}; and its outer loss.

        Args:
            x: (B, b, d) the mini-batch's input to the first updated block.
            states: the updated blocks' states at the mini-batch's start.
            fast: their fast weights W_i (None: W_0).
            targets: (B, b) the token after each position.
            lm_head: the LM head.
            outer_targets: (B, b) the outer loss's targets (-100: not scored), or None: not scored.
            keep: the positions (of the b) whose logits are returned.

        Returns:
            the ``_Step``: normed hidden states, kept logits, new block states, W_{i+1}, the block outputs, and the
            outer NLL sum (B,) scored from this step's own logits (so only one mini-batch's logits ever live).
        """
        if not torch.is_grad_enabled():
            return self._inference_step(x, states, fast, targets, lm_head, outer_targets, keep)
        if self.remat != "none":
            # the release's jax.remat per chunk: the graph keeps this step's inputs and outputs only; its inside
            # (the updated blocks, the head, both losses, the inner backward) is recomputed when the outer backward
            # reaches it
            params = [p for m in (*self.updated_blocks, self.norm, lm_head) for p in m.parameters()]
            step = partial(self._meta_step, lm_head=lm_head, keep=keep)
            return remat(step, (x, states, fast, targets, outer_targets), params)
        return self._meta_step(x, states, fast, targets, outer_targets, lm_head, keep)

    def _meta_step(
        self,
        x: Tensor,
        states: list[E2EBlockState | None],
        fast: list[FastWeights | None],
        targets: Tensor,
        outer_targets: Tensor | None,
        lm_head: nn.Module,
        keep: slice | Tensor,
    ) -> _Step:
        """``_learn`` in training: W_{i+1} stays a differentiable function of W_0, the step sizes and the other
        parameters (the inner gradient built with ``create_graph`` for the exact meta-gradient)."""
        config = self.config
        blocks = self.updated_blocks
        lrs = [lr for block in blocks for lr in block.prime.step_sizes(self.inner_lr_scale)]
        exact = config.meta_gradient == "exact"
        flat = [
            t if t.requires_grad else t.detach().requires_grad_() for w in self._weights(fast, x.shape[0]) for t in w
        ]
        # the flash/efficient SDPA kernels have no double backward; the math one does
        with sdpa_kernel(SDPBackend.MATH) if exact else nullcontext():
            h, new_states, outs = self._blocks(x, states, _group(flat))
        normed = self.norm(h)
        logits = lm_head(normed)
        log_probs = log_probabilities(logits)
        loss = inner_loss(log_probs, targets, self._ignored_target)
        grads = torch.autograd.grad(loss, flat, create_graph=exact, retain_graph=True)
        new = sgd_step(flat, grads, lrs, config.inner_grad_clip)
        outer = None if outer_targets is None else token_nll(log_probs, outer_targets).sum(1)
        return _Step(normed, _kept(logits, keep), new_states, _group(new), outs, outer)

    def _inference_step(
        self,
        x: Tensor,
        states: list[E2EBlockState | None],
        fast: list[FastWeights | None],
        targets: Tensor,
        lm_head: nn.Module,
        outer_targets: Tensor | None,
        keep: slice | Tensor,
    ) -> _Step:
        """``_learn`` under ``no_grad``/``inference_mode``: a first-order step on detached copies, nothing kept
        for a second-order pass."""
        config = self.config
        lrs = [
            lr.detach() if isinstance(lr, Tensor) else lr
            for block in self.updated_blocks
            for lr in block.prime.step_sizes(self.inner_lr_scale)
        ]
        with inner_grad_mode():
            flat = [autograd_ready(t).detach().requires_grad_() for w in self._weights(fast, x.shape[0]) for t in w]
            # a tuple: map_tensors maps tuples (and named tuples), not lists
            ready = list(map_tensors(tuple(states), autograd_ready))
            h, new_states, outs = self._blocks(autograd_ready(x), ready, _group(flat))
            normed = self.norm(h)
            logits = lm_head(normed)
            log_probs = log_probabilities(logits)
            grads = torch.autograd.grad(inner_loss(log_probs, autograd_ready(targets), self._ignored_target), flat)
        with torch.no_grad():
            new = sgd_step([t.detach() for t in flat], grads, lrs, config.inner_grad_clip)
            outer = None if outer_targets is None else token_nll(log_probs.detach(), outer_targets).sum(1)
        normed, logits, new_states, outs = map_tensors(
            (normed, _kept(logits, keep), tuple(new_states), tuple(outs)), Tensor.detach
        )
        return _Step(normed, logits, list(new_states), _group(new), list(outs), outer)


def _kept(logits: Tensor, keep: slice | Tensor) -> Tensor:
    """(B, kept, vocab) the kept positions of a mini-batch's logits (B, b, vocab): all of them as they are, a part
    as a copy (a view would keep the whole mini-batch's logits alive)."""
    kept = logits[:, keep]
    return logits if kept.shape[1] == logits.shape[1] else kept.clone()


def _checkpoint(function: Any, *args: Any) -> Any:
    """``function(*args)`` under ``torch.utils.checkpoint`` (non-reentrant): its activations are recomputed in
    the backward instead of kept (a lower block: no inner gradient inside)."""
    return checkpoint(function, *args, use_reentrant=False)


def _group(flat: list[Tensor]) -> list[FastWeights]:
    """[gate, up, down, gate, up, down, ...] → per block (gate, up, down)."""
    return [tuple(flat[i : i + 3]) for i in range(0, len(flat), 3)]  # type: ignore[misc]


def _kept_positions(logits_to_keep: int | Tensor, n: int, device: torch.device) -> tuple[Any, Tensor | None]:
    """``select(s, e)`` → the kept positions within [s, e) (relative to s), and the final reordering (or None)."""
    if isinstance(logits_to_keep, int):
        first = 0 if logits_to_keep == 0 else max(0, n - logits_to_keep)
        return (lambda s, e: slice(max(first, s) - s, e - s)), None
    positions = torch.arange(n, device=device)[logits_to_keep.to(device)]
    unique, inverse = torch.unique(positions, return_inverse=True)  # sorted: the order segments produce them in
    return (lambda s, e: unique[(unique >= s) & (unique < e)] - s), inverse


class E2EForCausalLM(InnerLrScaled, CausalLMHead, E2EPreTrainedModel, GenerationMixin):
    """``E2EModel`` with the LM head (tied to the embedding unless ``config.tie_word_embeddings`` is False).

    ``forward`` is ``TTTForCausalLM``'s. Test-time training happens in every call, training or not: the outputs of
    mini-batch i come from the fast weights after the steps on mini-batches 0 … i − 1 of the stream. With autograd
    on, the steps are part of the graph (meta-learning); under ``no_grad``/``inference_mode`` they are first-order
    and detached.
    """

    backbone_class = E2EModel
    _tied_weights_keys = TIED_LM_HEAD

    def _backbone_logits(
        self, logits_to_keep: int | Tensor, labels: Tensor | None, **backbone_kwargs: Any
    ) -> tuple[Tensor, Any]:
        # the backbone needs the LM head itself (the inner loss of every mini-batch is next-token prediction) and
        # the labels (it scores the outer loss inside each inner step)
        outputs = self.model(
            **backbone_kwargs,
            return_dict=True,
            lm_head=self.lm_head,
            logits_to_keep=logits_to_keep,
            labels=None if labels is None else self._outer_labels(labels),
        )
        return outputs.logits, outputs

    def _outer_labels(self, labels: Tensor) -> Tensor:
        """(B, T) the labels with BOS targets set to -100 (not counted) under ``mask_bos_targets``."""
        ignored = self.model._ignored_target
        return labels if ignored is None else labels.masked_fill(labels == ignored, -100)

    def _lm_loss(self, logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None, outputs: Any) -> Tensor:
        """The release's loss (``loss_reduction="mini_batch"``): per mini-batch means, averaged; BOS targets left
        out with ``mask_bos_targets``. Under gradient accumulation (``num_items_in_batch``) or with
        ``loss_reduction="token"``: the mean over counted tokens. Scored by the backbone inside its inner steps
        (any ``logits_to_keep``); a padded call, which runs row by row, from its whole logits."""
        if outputs.outer_sums is not None:
            sums, counts = outputs.outer_sums, outputs.outer_counts
        else:
            check_labels(labels, logits)
            labels = self._outer_labels(labels)
            sums, counts = mini_batch_nll(logits, labels, self.config.mini_batch_size, outputs.stream_start or 0)
        return outer_loss(sums, counts, self.config.loss_reduction, num_items_in_batch)
