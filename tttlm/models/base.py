"""What every model family here shares: the checks at the public boundary, the backbone and LM-head ``forward``s,
weight init, the stateful ``PreTrainedModel`` base, and the validation helpers of the configs.

A family (``ttt/``, ``stack/``, ``e2e/``) supplies its blocks (``forward(x, block cache) -> (x, block cache)``), its
cache class (``models.cache.BlockCache``) and its config; the ``forward`` that runs the blocks, the loss, the cache
handling for ``generate`` and the input checks are here, once.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from tttlm.models.cache import BlockCache
from tttlm.models.hf_compat import output_cache, pop_cache, with_cache
from tttlm.models.remote_code import RemoteCodeMixin
from tttlm.ops.forms import SEQUENCE_FORMS, canonical_form

# the LM head shares the input embedding's weight (transformers 5 describes tied weights as {target: source})
TIED_LM_HEAD = {"lm_head.weight": "model.embed_tokens.weight"}


def check_input_ids(input_ids: object, vocab_size: int) -> None:
    """Raise TypeError/ValueError unless ``input_ids`` is an integer tensor (batch, seq) of ids in [0, vocab_size)
    (the range is checked for CPU tensors only: elsewhere it would cost a host sync per call)."""
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids; got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(
            f"input_ids must be an integer tensor (torch.long) of token ids; got dtype {input_ids.dtype}. "
            "Pass embeddings as inputs_embeds instead, or cast ids with .long()"
        )
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape (batch, seq); got shape {tuple(input_ids.shape)}. "
            "A single sequence needs a batch dim: input_ids.unsqueeze(0)"
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}); pass at least one token per sequence")
    if input_ids.device.type != "cpu":
        # reading the range back would stall the host on every decoded token; out-of-range ids still fail there,
        # in the embedding lookup (a device-side assert), just with a less helpful message
        return
    if torch.compiler.is_compiling():
        # .item() would break the compiled graph here; the compiled callers check the ids before the call
        # (tttlm.models.compiled), and an id out of range still fails in the embedding lookup (IndexError)
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"input_ids contains token id {bad}, outside [0, vocab_size={vocab_size}); "
            "check that the tokenizer matches the model's vocabulary"
        )


def check_inputs_embeds(inputs_embeds: object, hidden_size: int) -> None:
    if not isinstance(inputs_embeds, Tensor) or not inputs_embeds.is_floating_point():
        raise TypeError(f"inputs_embeds must be a floating-point torch.Tensor; got {type(inputs_embeds).__name__}")
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden_size or 0 in inputs_embeds.shape[:2]:
        raise ValueError(
            f"inputs_embeds must have shape (batch, seq, hidden_size={hidden_size}) with seq >= 1; "
            f"got {tuple(inputs_embeds.shape)}"
        )


def real_tokens(attention_mask: Tensor | None, batch: int, seq: int) -> Tensor | None:
    """(batch, seq) bool: which of this call's ``seq`` tokens are real (the mask's last ``seq`` columns: ``generate``
    passes the mask of the whole sequence so far), or None when all are.

    A padded token must never enter a recurrent state (a TTT layer would learn it, and it would shift the rows'
    mini-batch alignment), so padded batches are run row by row (``forward_by_row``), each row on its real tokens.
    """
    if attention_mask is None:
        return None
    if (
        not isinstance(attention_mask, Tensor)
        or attention_mask.dim() != 2
        or attention_mask.shape[0] != batch
        or attention_mask.shape[1] < seq
    ):
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(
            f"attention_mask must be None or a (batch={batch}, tokens >= seq={seq}) tensor of 0s and 1s; got {shape}"
        )
    real = attention_mask[:, attention_mask.shape[1] - seq :] != 0
    return None if bool(real.all()) else real


def forward_by_row(
    model: nn.Module,
    real: Tensor | None,
    cache: BlockCache | None,
    inputs: dict[str, Tensor],
    use_cache: bool,
    output_hidden_states: bool,
    **row_kwargs: Any,
) -> tuple[dict[str, Any], BlockCache | None]:
    """Run ``model`` on each row's real tokens alone, with that row's own cache, and put the rows together.

    Args:
        real: (batch, seq) bool of the real tokens (None: all of them, for a cache already in rows).
        cache: the call's cache (``resolve_cache``'s): its rows, or its batched state cut into rows, are continued.
        inputs: {"input_ids": (batch, seq)} or {"inputs_embeds": (batch, seq, hidden)}.
        row_kwargs: further arguments of every row's call (TTT-E2E: the LM head).

    Returns:
        The output fields ``last_hidden_state`` and, when the model returns them, ``logits`` (batch, seq, ·) and
        ``hidden_states`` (a tuple of those), zero at padded positions; and the cache, now holding the rows (None
        without ``use_cache``).
    """
    ((name, x),) = inputs.items()
    batch, seq = x.shape[:2]
    real = torch.ones(batch, seq, dtype=torch.bool, device=x.device) if real is None else real
    rows = [None] * batch if cache is None else cache.split_rows(batch)
    if not bool(real.any()):
        raise ValueError("every token of this call is padding (attention_mask all 0): pass at least one real token")
    pieces: list[tuple[int, Tensor, Any]] = []
    for i in range(batch):
        positions = real[i].nonzero().squeeze(-1)
        if positions.numel():
            out = model(
                **{name: x[i : i + 1, positions]},
                past_key_values=rows[i],
                use_cache=True,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                **row_kwargs,
            )
            rows[i] = output_cache(out)
            pieces.append((i, positions, out))

    def assemble(get: Any) -> Tensor:
        first = get(pieces[0][2])
        full = first.new_zeros(batch, seq, *first.shape[2:])
        for i, positions, out in pieces:
            full[i, positions] = get(out)[0]
        return full

    fields: dict[str, Any] = {"last_hidden_state": assemble(lambda out: out.last_hidden_state)}
    if getattr(pieces[0][2], "logits", None) is not None:
        fields["logits"] = assemble(lambda out: out.logits)
    if output_hidden_states:
        layers = len(pieces[0][2].hidden_states)
        fields["hidden_states"] = tuple(assemble(lambda out, k=k: out.hidden_states[k]) for k in range(layers))
    if not use_cache:
        return fields, None
    seen = cache.seen_tokens
    cache.reset()  # the state now lives in the rows (a family's reset clears its own extras, e.g. E2E's open batch)
    cache.rows, cache.seen_tokens = rows, seen + seq
    return fields, cache


def kept_positions(logits_to_keep: int | Tensor) -> slice | Tensor:
    """The positions whose logits a call returns: all for 0, the last k for k > 0, or the given 1-D positions."""
    return slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep


def runs_by_row(real: Tensor | None, cache: BlockCache | None) -> bool:
    """Whether a call takes ``forward_by_row``: some token of it is padding, or the cache already holds rows."""
    return real is not None or (cache is not None and cache.rows is not None)


def resolve_cache(
    model: PreTrainedModel, cache: object, cache_class: type[BlockCache], batch: int, use_cache: bool | None
) -> tuple[BlockCache | None, bool]:
    """The cache a forward call of ``model`` continues (checked against the model and the batch) or starts, and
    whether the call returns it: by default when one is given, or ``config.use_cache`` outside training."""
    if cache is not None:
        if not isinstance(cache, cache_class):
            raise TypeError(
                f"past_key_values must be a {cache_class.__name__} (returned by an earlier call with "
                f"use_cache=True); got {type(cache).__name__}"
            )
        if len(cache) != model.config.num_hidden_layers:
            raise ValueError(
                f"past_key_values has {len(cache)} layers but the model has {model.config.num_hidden_layers}; "
                "was it made for another model?"
            )
        if cache.batch_size not in (None, batch):
            raise ValueError(
                f"past_key_values holds a batch of {cache.batch_size} sequences but the input has {batch}; "
                "continue each cache with inputs of the same batch size"
            )
    if use_cache is None:
        use_cache = cache is not None or (model.config.use_cache and not model.training)
    if use_cache and cache is None:
        cache = cache_class(model.config.num_hidden_layers)
    return cache, use_cache


def causal_lm_loss(
    logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None = None, ignore_index: int = -100
) -> Tensor:
    """Next-token cross-entropy: position t is scored against ``labels[:, t + 1]``; ``ignore_index`` is skipped.

    logits: (batch, seq, vocab); labels: (batch, seq). The mean over counted tokens, or the sum divided by
    ``num_items_in_batch`` (the transformers convention under gradient accumulation). Half-precision logits are
    upcast to float32; float64 stays float64 (transformers' own loss would round it to float32).
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    targets = F.pad(labels, (0, 1), value=ignore_index)[:, 1:].to(logits.device)
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index, reduction=reduction)
    return loss if num_items_in_batch is None else loss / num_items_in_batch


def check_labels(labels: Tensor, logits: Tensor) -> None:
    """Refuse labels (batch, seq) that do not match the kept logits (batch, kept, vocab) a loss is computed from."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must have shape (batch, seq) = {tuple(logits.shape[:2])} like the kept logits; got "
            f"{tuple(labels.shape)} (with labels, leave logits_to_keep at 0)"
        )


class BlockStackBackbone:
    """A backbone: ``embed_tokens``, ``layers`` (``num_hidden_layers`` × ``block_class``, each ``(x, block cache)
    -> (x, block cache)``) and the final RMSNorm ``norm``, carrying its state in a ``cache_class`` cache; and its
    ``forward``. Mixed into ``PreTrainedModel``s."""

    block_class: ClassVar[type[nn.Module]]  # built as ``block_class(config, layer_idx)``
    cache_class: ClassVar[type[BlockCache]]

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([self.block_class(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        past_key_values: BlockCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the backbone.

        Args:
            input_ids: (batch, seq) token ids in [0, vocab_size); or give ``inputs_embeds`` (batch, seq, hidden).
            attention_mask: (batch, seq) or, as ``generate`` passes it, (batch, tokens so far): 0 marks padding. A
                padded batch is run row by row on the real tokens (``forward_by_row``), so padding never enters
                a state; outputs at padded positions are zero.
            past_key_values: a cache (``cache_class``) to continue from; it is updated in place and returned. It may
                also be passed as ``cache`` or ``cache_params`` (the names of other transformers releases).
            use_cache: return a cache (a new one when none is given). Default: ``config.use_cache`` when not training.
            output_hidden_states: also return the embeddings and every block's output (num_layers + 1 tensors).
            return_dict: return a ``BaseModelOutputWithPast`` (default) or a tuple.

        Returns:
            ``last_hidden_state`` (batch, seq, hidden) after the final norm, the cache (or None; in the field the
            installed transformers reads, see ``hf_compat.output_cache``) and optionally ``hidden_states``.
        """
        past_key_values = pop_cache(past_key_values, kwargs)
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (batch, seq) and inputs_embeds (batch, seq, hidden)")
        if input_ids is not None:
            check_input_ids(input_ids, config.vocab_size)
            inputs_embeds = self.embed_tokens(input_ids)
        else:
            check_inputs_embeds(inputs_embeds, config.hidden_size)
        batch, seq = inputs_embeds.shape[:2]
        real = real_tokens(attention_mask, batch, seq)
        past_key_values, use_cache = resolve_cache(self, past_key_values, self.cache_class, batch, use_cache)
        if runs_by_row(real, past_key_values):
            fields, cache_out = forward_by_row(
                self, real, past_key_values, {"inputs_embeds": inputs_embeds}, use_cache, output_hidden_states
            )
            hidden, hidden_states = fields["last_hidden_state"], fields.get("hidden_states")
        else:
            hidden, hidden_states = self._run_blocks(inputs_embeds, past_key_values, output_hidden_states)
            cache_out = past_key_values if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden, cache_out, hidden_states) if v is not None)
        return with_cache(BaseModelOutputWithPast, cache_out, last_hidden_state=hidden, hidden_states=hidden_states)

    def _run_blocks(
        self, inputs_embeds: Tensor, cache: BlockCache | None, output_hidden_states: bool
    ) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """The blocks and the final norm on (batch, seq, hidden) inputs, continuing ``cache`` (updated in place)."""
        hidden = inputs_embeds
        all_hidden = [hidden] if output_hidden_states else None
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.layers):
            block_cache = None if cache is None else cache.blocks[i]
            if checkpointing:
                hidden, new_cache = self._gradient_checkpointing_func(block.__call__, hidden, block_cache)
            else:
                hidden, new_cache = block(hidden, block_cache)
            if cache is not None:
                cache.blocks[i] = new_cache
            if all_hidden is not None:
                all_hidden.append(hidden)
        if cache is not None:
            cache.seen_tokens += inputs_embeds.shape[1]
        return self.norm(hidden), None if all_hidden is None else tuple(all_hidden)


class CausalLMHead:
    """``model`` (a ``backbone_class``) and the LM head ``lm_head``: embedding accessors and ``forward``, with the
    loss. Mixed into ``PreTrainedModel``s."""

    backbone_class: ClassVar[type[nn.Module]]

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.model = self.backbone_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def _backbone_logits(
        self, logits_to_keep: int | Tensor, labels: Tensor | None, **backbone_kwargs: Any
    ) -> tuple[Tensor, Any]:
        """Run ``self.model`` and the LM head on the kept positions: (logits, the backbone's outputs). ``labels``
        serve a family whose backbone scores the loss itself (TTT-E2E, inside its inner steps); unused here."""
        outputs = self.model(**backbone_kwargs, return_dict=True)
        return self.lm_head(outputs.last_hidden_state[:, kept_positions(logits_to_keep)]), outputs

    def _lm_loss(self, logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None, outputs: Any) -> Tensor:
        """The loss of ``forward(labels=...)``: next-token cross-entropy (``causal_lm_loss``); a family may reduce
        it otherwise (TTT-E2E: per mini-batch)."""
        check_labels(labels, logits)
        return causal_lm_loss(logits, labels, num_items_in_batch)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        past_key_values: BlockCache | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits for every position (or the last ``logits_to_keep``), and the loss when ``labels`` are given.

        Args:
            input_ids, attention_mask, inputs_embeds, past_key_values, use_cache, output_hidden_states,
                return_dict: as in ``TTTModel.forward``.
            labels: (batch, seq) target ids, shifted inside (position t predicts labels[t + 1]) like every
                transformers causal LM; -100 marks ignored positions.
            logits_to_keep: 0 for all positions; k > 0 for the last k; or a 1-D tensor of positions to keep.
            **kwargs: ``num_items_in_batch`` (gradient accumulation: the loss is then sum / num_items_in_batch);
                other keys that ``generate`` or the Trainer pass along are ignored.

        Returns:
            ``logits`` (batch, kept positions, vocab), ``loss`` (scalar or None), the cache, ``hidden_states``.
        """
        logits, outputs = self._backbone_logits(
            logits_to_keep,
            labels,
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            past_key_values=pop_cache(past_key_values, kwargs),
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        loss = None
        if labels is not None:
            loss = self._lm_loss(logits, labels, kwargs.get("num_items_in_batch"), outputs)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        cache = output_cache(outputs)
        if not return_dict:
            out = tuple(v for v in (logits, cache, outputs.hidden_states) if v is not None)
            return (loss, *out) if loss is not None else out
        return with_cache(CausalLMOutputWithPast, cache, loss=loss, logits=logits, hidden_states=outputs.hidden_states)


def init_module_weights(module: nn.Module, std: float, self_initialising: tuple[type[nn.Module], ...]) -> None:
    """The ``_init_weights`` of every model here: linear and embedding weights ~ N(0, std) with zero biases, norms
    ones and zeros, and the modules of ``self_initialising`` (ours, with their own ``reset_parameters``) reset."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, self_initialising):
        module.reset_parameters()


class StatefulPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """The ``PreTrainedModel`` base of every family whose state (a ``BlockCache``) cannot be rolled back; a saved
    model loads without ``import tttlm`` (``remote_code.RemoteCodeMixin``).

    Subclasses set ``config_class``, ``_no_split_modules`` and ``self_initialising`` (their modules that
    initialise their own parameters through ``reset_parameters``).
    """

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    # generate: no assisted decoding (recurrent states, fast weights and KV windows cannot be rolled back)
    _is_stateful = True
    self_initialising: ClassVar[tuple[type[nn.Module], ...]] = ()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module's own parameters (transformers calls this for every module).

        The layers with their own ``reset_parameters`` (``self_initialising``) initialise themselves, so a fresh
        model, a model whose checkpoint lacks some weights, and one built on the meta device then materialised all
        get the same distributions. Every init goes through ``nn.init``, so transformers can skip parameters
        already loaded from a checkpoint.
        """
        init_module_weights(module, self.config.initializer_range, self.self_initialising)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not hand us a transformers DynamicCache: forward creates the family's own cache
        return False


class LMConfig(PretrainedConfig):
    """The fields every config here shares, validated once: the LM's dims, RoPE base, norm epsilon, init, special
    tokens. A family's config validates and sets its own fields, then calls ``super().__init__`` with these.

    Every message names the config class, the field, the value and what would be accepted.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        hidden_size: int,
        intermediate_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        rope_theta: float,
        rms_norm_eps: float,
        initializer_range: float,
        tie_word_embeddings: bool,
        max_position_embeddings: int,
        use_cache: bool,
        pad_token_id: int | None,
        bos_token_id: int | None,
        eos_token_id: int | None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        dims = {
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "max_position_embeddings": max_position_embeddings,
        }
        for name, value in dims.items():
            positive_int(owner, name, value)
        check_head_dim(owner, hidden_size, num_attention_heads)
        positive_number(owner, "rope_theta", rope_theta, "10000.0")
        positive_number(owner, "rms_norm_eps", rms_norm_eps, "1e-6")
        if not is_number(initializer_range) or initializer_range < 0:
            raise ValueError(
                f"{owner}: initializer_range must be a number >= 0; got {initializer_range!r}. Pass e.g. 0.02."
            )
        for name, value in dims.items():
            setattr(self, name, value)
        self.rope_theta = float(rope_theta)
        self.rms_norm_eps = float(rms_norm_eps)
        self.initializer_range = float(initializer_range)
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


# Validation of config values shared by the model configs: each message names the config class, the field, the
# value and what would be accepted.


def check_head_dim(owner: str, hidden_size: int, num_heads: int, heads_name: str = "num_attention_heads") -> None:
    """``hidden_size`` must split into ``num_heads`` heads of even size (RoPE rotates pairs of channels)."""
    if hidden_size % num_heads:
        raise ValueError(
            f"{owner}: hidden_size ({hidden_size}) must be divisible by {heads_name} ({num_heads}); pick heads so "
            "that hidden_size / heads is an even integer (e.g. 64)."
        )
    head_dim = hidden_size // num_heads
    if head_dim % 2:
        raise ValueError(
            f"{owner}: head dim hidden_size / {heads_name} = {hidden_size} / {num_heads} = {head_dim} must be even "
            f"(RoPE rotates pairs of channels); change hidden_size or {heads_name}."
        )


def check_flags(owner: str, **flags: object) -> None:
    """Each of ``flags`` must be True or False."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"{owner}: {name} must be True or False; got {flag!r}.")


def is_number(value: object) -> bool:
    """A finite int or float (bools excluded)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def positive_int(owner: str, name: str, value: object, example: int = 64) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer; got {value!r}. Pass e.g. {name}={example}.")


def positive_number(owner: str, name: str, value: object, example: str | None = None) -> None:
    if not is_number(value) or not value > 0:
        hint = f" Pass e.g. {name}={example}." if example else ""
        raise ValueError(f"{owner}: {name} must be a finite positive number; got {value!r}.{hint}")


def choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def sequence_form(owner: str, form: object) -> str:
    """The canonical name of a config's TTT op form (one of ``ops.SEQUENCE_FORMS``; "naive" is read as "primal", so
    configs saved before the rename load); "step" is not one: it is the decode path, chosen per call."""
    try:
        return canonical_form(form, SEQUENCE_FORMS)
    except ValueError:
        choices = ", ".join(map(repr, SEQUENCE_FORMS))
        raise ValueError(f"{owner}: ttt_form must be one of {choices}; got {form!r}.") from None
