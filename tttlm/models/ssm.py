"""Mamba and Mamba-2 baselines: transformers' own ``MambaForCausalLM`` / ``Mamba2ForCausalLM``, adapted to the
common call contract of the registry (``past_key_values`` in and out, like every other arch).

transformers' Mamba classes take and return the cache as ``cache_params``; the subclasses here accept
``past_key_values`` (and still ``cache_params``) and return a ``CausalLMOutputWithPast``. Their weights, maths and
pure-PyTorch CPU paths (used when ``mamba_ssm`` / ``causal_conv1d`` are absent) are the library's, unchanged; the
state dict keys are those of the library classes, so a checkpoint loads into either.

Each gets its own config subclass and model type ("tttlm_mamba", "tttlm_mamba2") so that
``AutoModelForCausalLM.from_pretrained(dir)`` rebuilds the adapted class (registered on ``import tttlm``).

``generate`` gets no cache from transformers (``_supports_default_dynamic_cache`` is False): the first forward call
creates an ``SSMCache``, the library's ``DynamicCache`` of Mamba layers plus a count of the tokens seen, which
``generate`` asks for (a plain ``DynamicCache`` of linear-attention layers cannot say its length). The class names
avoid the word "mamba" on purpose: ``generate`` in transformers 5 switches to the ``cache_params`` argument for
classes so named, and we want the ``past_key_values`` contract everywhere.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers import DynamicCache, GenerationMixin, Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast


class MambaLMConfig(MambaConfig):
    """``MambaConfig`` under the model type "tttlm_mamba" (loads as ``SelectiveScanForCausalLM``).

    Passing ``intermediate_size`` (the inner width d_inner) overrides the library's ``expand × hidden_size`` (the
    value given is set after the config computes its own, and saved in config.json, so it survives a reload).
    """

    model_type = "tttlm_mamba"


class Mamba2LMConfig(Mamba2Config):
    """``Mamba2Config`` under the model type "tttlm_mamba2" (loads as ``SSDForCausalLM``)."""

    model_type = "tttlm_mamba2"


class SSMCache(DynamicCache):
    """The library's ``DynamicCache`` (conv and SSM states per Mamba layer) that also counts the tokens seen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens consumed so far (``generate`` asks; Mamba layers do not track it themselves)."""
        return self.seen_tokens


def _adapted_forward(parent: type, model: Any, cache: Any, **kwargs: Any) -> CausalLMOutputWithPast | tuple:
    """``parent.forward`` with ``cache`` passed as ``cache_params`` and returned as ``past_key_values``."""
    tokens = kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
    seq = 0 if tokens is None else tokens.shape[1]
    if not model.supports_chunked_prefill and isinstance(cache, SSMCache) and cache.seen_tokens and seq > 1:
        raise ValueError(
            f"{type(model).__name__}: transformers' Mamba scan starts every multi-token call from a zero state, so "
            f"{seq} tokens cannot continue a cache that has seen {cache.seen_tokens}; feed them one token at a time, "
            "or the whole sequence in one call (tttlm.models.prefill does the latter)"
        )
    return_dict = kwargs.pop("return_dict", None)
    return_dict = return_dict if return_dict is not None else model.config.return_dict
    use_cache = kwargs.get("use_cache")
    use_cache = use_cache if use_cache is not None else (model.config.use_cache and not model.training)
    if use_cache and cache is None:
        cache = SSMCache(config=model.config)
    out = parent.forward(model, cache_params=cache, return_dict=True, **kwargs)
    if isinstance(cache, SSMCache):
        cache.seen_tokens += seq
    result = CausalLMOutputWithPast(
        loss=out.loss, logits=out.logits, past_key_values=out.cache_params, hidden_states=out.hidden_states
    )
    return result if return_dict else result.to_tuple()


def _prepare_inputs(model: Any, input_ids: Tensor, **kwargs: Any) -> dict[str, Any]:
    # GenerationMixin's default (it slices input_ids after the first step); like the library's Mamba classes, the
    # attention mask is dropped after the first step (a recurrent step has no use for it)
    inputs = GenerationMixin.prepare_inputs_for_generation(model, input_ids, **kwargs)
    if kwargs.get("use_cache") and not kwargs.get("is_first_iteration"):
        inputs["attention_mask"] = None
    return inputs


class SelectiveScanForCausalLM(MambaForCausalLM):
    """transformers ``MambaForCausalLM`` (Mamba-1, selective scan) with ``past_key_values`` in and out."""

    config_class = MambaLMConfig
    # the library's pure-PyTorch scan starts multi-token calls from a zero state (see registry.prefill)
    supports_chunked_prefill = False

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        past_key_values: Any = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        cache_params: Any = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """``MambaForCausalLM.forward``, with the cache given and returned as ``past_key_values``."""
        return _adapted_forward(
            MambaForCausalLM,
            self,
            past_key_values if past_key_values is not None else cache_params,
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids: Tensor, **kwargs: Any) -> dict[str, Any]:
        return _prepare_inputs(self, input_ids, **kwargs)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward creates an SSMCache


class SSDForCausalLM(Mamba2ForCausalLM):
    """transformers ``Mamba2ForCausalLM`` (Mamba-2, state-space duality) with ``past_key_values`` in and out."""

    config_class = Mamba2LMConfig
    supports_chunked_prefill = True

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        past_key_values: Any = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        cache_params: Any = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """``Mamba2ForCausalLM.forward``, with the cache given and returned as ``past_key_values``."""
        return _adapted_forward(
            Mamba2ForCausalLM,
            self,
            past_key_values if past_key_values is not None else cache_params,
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids: Tensor, **kwargs: Any) -> dict[str, Any]:
        return _prepare_inputs(self, input_ids, **kwargs)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward creates an SSMCache
