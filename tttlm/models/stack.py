"""``StackModel`` / ``StackForCausalLM``: blocks of chosen sequence mixers, as transformers ``PreTrainedModel``s.

Block i, each sub-block pre-normed with RMSNorm (see ``StackConfig``):

    for m in layer_mixers[i]:  x ← x + m(RMSNorm(x))      sliding/full attention, Gated DeltaNet, TTT
    x ← x + SwiGLU(RMSNorm(x))

The model shares the TTT model's conventions: a ``StackCache`` updated in place, padding refused (recurrent
mixers would absorb pad tokens), the loss shifted inside, ``generate`` creating its own cache.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from tttlm.layers.attention import Attention
from tttlm.layers.conv import CausalConv
from tttlm.layers.gated_deltanet import GatedDeltaNet
from tttlm.layers.mlp import SwiGLU
from tttlm.layers.ttt import TTTLayer
from tttlm.models.modeling import (
    _TIED_LM_HEAD,
    _check_attention_mask,
    _check_inputs_embeds,
    causal_lm_loss,
    check_input_ids,
)
from tttlm.models.stack_cache import StackCache
from tttlm.models.stack_config import StackConfig

# attribute names of each mixer and its norm inside a block (they name the checkpoint keys)
_MIXER_ATTRS = {
    "full_attention": "attn",
    "sliding_attention": "attn",
    "gated_deltanet": "gdn",
    "ttt": "ttt",
}


def _make_mixer(name: str, config: StackConfig) -> nn.Module:
    if name in ("full_attention", "sliding_attention"):
        return Attention(
            config.hidden_size,
            config.num_attention_heads,
            window=config.sliding_window if name == "sliding_attention" else None,
            rope_theta=config.rope_theta,
            block_size=config.attention_block_size,
        )
    if name == "gated_deltanet":
        return GatedDeltaNet(
            config.hidden_size,
            config.gdn_num_heads,
            config.gdn_head_dim,
            expand_v=config.gdn_expand_v,
            conv_kernel=config.conv_kernel,
            chunk_size=config.gdn_chunk_size,
            form=config.gdn_form,
            eps=config.rms_norm_eps,
        )
    return TTTLayer(
        config.hidden_size,
        config.ttt_num_heads,
        config.ttt_layer_type,
        mini_batch_size=config.ttt_mini_batch_size,
        base_lr=config.ttt_base_lr,
        rope_theta=config.rope_theta,
        use_gate=config.ttt_use_gate,
        form=config.ttt_form,
        initializer_range=config.initializer_range,
    )


class StackBlock(nn.Module):
    """One block: ``x + m(RMSNorm(x))`` for each configured mixer m, then ``x + SwiGLU(RMSNorm(x))``.

    ``forward(x, cache) -> (x, cache)``; x: (batch, seq, hidden); the cache is a tuple with one entry per mixer.
    A pure function of its inputs (nothing is modified in place), so gradient checkpointing may recompute it.
    """

    def __init__(self, config: StackConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.mixer_attrs = [_MIXER_ATTRS[name] for name in config.layer_mixers[layer_idx]]
        for name, attr in zip(config.layer_mixers[layer_idx], self.mixer_attrs, strict=True):
            setattr(self, f"{attr}_norm", nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps))
            setattr(self, attr, _make_mixer(name, config))
        self.ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: Tensor, cache: tuple | None = None) -> tuple[Tensor, tuple]:
        """x: (batch, seq, hidden); ``cache`` continues a stream. Returns (batch, seq, hidden) and the new cache."""
        new_cache = []
        for i, attr in enumerate(self.mixer_attrs):
            h, mixer_cache = getattr(self, attr)(getattr(self, f"{attr}_norm")(x), None if cache is None else cache[i])
            x = x + h
            new_cache.append(mixer_cache)
        x = x + self.mlp(self.ffn_norm(x))
        return x, tuple(new_cache)


class StackPreTrainedModel(PreTrainedModel):
    """Weight init, checkpointing support and the config class shared by the stack models."""

    config_class = StackConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["StackBlock"]
    # generate: no assisted decoding (recurrent states and KV windows cannot be rolled back)
    _is_stateful = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module's own parameters, every one through ``nn.init`` (see ``TTTPreTrainedModel``)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (CausalConv, TTTLayer, GatedDeltaNet)):
            module.reset_parameters()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not hand us a transformers DynamicCache: forward creates its own StackCache
        return False


class StackModel(StackPreTrainedModel):
    """Embedding, ``num_hidden_layers`` × ``StackBlock`` and the final RMSNorm. Returns hidden states."""

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([StackBlock(config, i) for i in range(config.num_hidden_layers)])
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
        past_key_values: StackCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the backbone; the arguments and outputs are those of ``TTTModel.forward`` with a ``StackCache``."""
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (batch, seq) and inputs_embeds (batch, seq, hidden)")
        if input_ids is not None:
            check_input_ids(input_ids, config.vocab_size)
            inputs_embeds = self.embed_tokens(input_ids)
        else:
            _check_inputs_embeds(inputs_embeds, config.hidden_size)
        batch, seq = inputs_embeds.shape[:2]
        _check_attention_mask(attention_mask, batch)

        if past_key_values is not None and not isinstance(past_key_values, StackCache):
            raise TypeError(
                f"past_key_values must be a StackCache (returned by an earlier call with use_cache=True); "
                f"got {type(past_key_values).__name__}"
            )
        if use_cache is None:
            use_cache = past_key_values is not None or (config.use_cache and not self.training)
        if use_cache and past_key_values is None:
            past_key_values = StackCache(config.num_hidden_layers)
        if past_key_values is not None:
            if len(past_key_values) != len(self.layers):
                raise ValueError(
                    f"past_key_values has {len(past_key_values)} layers but the model has {len(self.layers)}; "
                    "was it made for another model?"
                )
            if past_key_values.batch_size not in (None, batch):
                raise ValueError(
                    f"past_key_values holds a batch of {past_key_values.batch_size} sequences but the input has "
                    f"{batch}; continue each cache with inputs of the same batch size"
                )

        hidden = inputs_embeds
        all_hidden = [hidden] if output_hidden_states else None
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.layers):
            block_cache = None if past_key_values is None else past_key_values.blocks[i]
            if checkpointing:
                hidden, new_cache = self._gradient_checkpointing_func(block.__call__, hidden, block_cache)
            else:
                hidden, new_cache = block(hidden, block_cache)
            if past_key_values is not None:
                past_key_values.blocks[i] = new_cache
            if all_hidden is not None:
                all_hidden.append(hidden)
        if past_key_values is not None:
            past_key_values.seen_tokens += seq
        hidden = self.norm(hidden)

        cache_out = past_key_values if use_cache else None
        hidden_states = tuple(all_hidden) if all_hidden is not None else None
        if not return_dict:
            return tuple(v for v in (hidden, cache_out, hidden_states) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache_out, hidden_states=hidden_states)


class StackForCausalLM(StackPreTrainedModel, GenerationMixin):
    """``StackModel`` with the LM head (tied to the embedding unless ``config.tie_word_embeddings`` is False)."""

    _tied_weights_keys = _TIED_LM_HEAD

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.model = StackModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        past_key_values: StackCache | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (and the loss with ``labels``); the arguments are those of ``TTTForCausalLM.forward``."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(
                    f"labels must have shape (batch, seq) = {tuple(logits.shape[:2])} like the kept logits; got "
                    f"{tuple(labels.shape)} (with labels, leave logits_to_keep at 0)"
                )
            loss = causal_lm_loss(logits, labels, kwargs.get("num_items_in_batch"))
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            out = tuple(v for v in (logits, outputs.past_key_values, outputs.hidden_states) if v is not None)
            return (loss, *out) if loss is not None else out
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states
        )
