"""Mamba and Mamba-2 baselines: transformers' own ``MambaForCausalLM`` / ``Mamba2ForCausalLM``, adapted to the
common call contract of the registry (``past_key_values`` in and out, like every other arch).

transformers' Mamba classes take and return the cache as ``cache_params`` (``cache`` from 5.24 on); the subclasses
here accept ``past_key_values``, ``cache`` or ``cache_params`` and return a ``CausalLMOutputWithPast`` with the cache
where the installed release reads it (``tttlm.models.hf_compat``). Their weights and maths are
the library's; the state dict keys are those of the library classes, so a checkpoint loads into either.

Mamba-1's mixer runs our scan (``SelectiveScanMixer``, ``tttlm.ops.selective_scan``) instead of the library's
pure-PyTorch fallback, which is used whenever ``mamba_ssm`` is absent (always on CPU) and has two flaws: its backward
is quadratic in T (245 s per training step at tiny, 8 × 1024 tokens), and it starts every multi-token call from a zero
state, so a cache could only be continued one token at a time. Mamba-2's mixer is the library's (its chunked scan
continues a cache and is linear).

Each gets its own config subclass and model type ("tttlm_mamba", "tttlm_mamba2") so that
``AutoModelForCausalLM.from_pretrained(dir)`` rebuilds the adapted class (registered on ``import tttlm``).

``generate`` gets no cache from transformers (``_supports_default_dynamic_cache`` is False): the first forward call
creates an ``SSMCache``, the library's ``DynamicCache`` of Mamba layers plus a count of the tokens seen, which
``generate`` asks for (a plain ``DynamicCache`` of linear-attention layers cannot say its length). The class names
avoid the word "mamba" on purpose: ``generate`` in transformers 5 switches to the ``cache_params`` argument for
classes so named, and we want one contract everywhere.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import Cache, GenerationMixin, Mamba2ForCausalLM, MambaForCausalLM, PreTrainedModel
from transformers.integrations.accelerate import force_accelerate_hooks
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.mamba.modeling_mamba import MambaMixer, apply_mask_to_padding_states
from transformers.utils import ModelOutput

from tttlm.models.hf_compat import given_cache, pop_cache, with_cache
from tttlm.models.remote_code import RemoteCodeMixin
from tttlm.models.ssm.cache import SSMCache
from tttlm.models.ssm.configuration import Mamba2LMConfig, MambaLMConfig
from tttlm.ops.selective_scan import selective_scan


@functools.cache
def _library_cache_name(forward: Callable[..., Any]) -> str:
    # read once per function: the signature does not change, and forward runs once per decoded token
    return "cache" if "cache" in inspect.signature(forward).parameters else "cache_params"


def library_cache_argument(forward: Callable[..., Any], cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for a ``forward`` of the library's Mamba classes, which take the cache as ``cache_params``
    before transformers 5.24 and as ``cache`` from then on."""
    return {_library_cache_name(forward): cache}


def _returned_cache(out: ModelOutput) -> Any:
    """The cache in an output of the library's Mamba classes (field ``cache_params`` or, from 5.24, ``cache``)."""
    return next((out[name] for name in ("cache", "cache_params") if out.get(name) is not None), None)


def _adapted_forward(parent: type, model: Any, cache: Any, **kwargs: Any) -> CausalLMOutputWithPast | tuple:
    """``parent.forward`` with ``cache`` passed under the library's name and returned where ``generate`` reads it."""
    tokens = kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
    seq = 0 if tokens is None else tokens.shape[1]
    return_dict = kwargs.pop("return_dict", None)
    return_dict = return_dict if return_dict is not None else model.config.return_dict
    use_cache = kwargs.get("use_cache")
    use_cache = use_cache if use_cache is not None else (model.config.use_cache and not model.training)
    if use_cache and cache is None:
        cache = SSMCache(config=model.config)
    out = parent.forward(model, return_dict=True, **library_cache_argument(parent.forward, cache), **kwargs)
    if isinstance(cache, SSMCache):
        cache.seen_tokens += seq
    result = with_cache(
        CausalLMOutputWithPast, _returned_cache(out), loss=out.loss, logits=out.logits, hidden_states=out.hidden_states
    )
    return result if return_dict else result.to_tuple()


class CallContract(RemoteCodeMixin):
    """The registry's call contract on a library Mamba class (mixed in before it): the cache in as
    ``past_key_values`` (or ``cache``/``cache_params``) and out where the installed transformers reads it, and
    ``generate`` without a library cache (the first forward call creates an ``SSMCache``), and a saved model that
    loads without ``import tttlm``."""

    library_class: ClassVar[type[PreTrainedModel]]  # the library's class whose forward this adapts

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        past_key_values: Any = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """``library_class.forward`` with the cache given as ``past_key_values`` (or ``cache``/``cache_params``)
        and returned in the output field that the installed transformers reads."""
        return _adapted_forward(
            self.library_class,
            self,
            pop_cache(past_key_values, kwargs),
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids: Tensor, **kwargs: Any) -> dict[str, Any]:
        # GenerationMixin's default (it slices input_ids after the first step); like the library's Mamba classes,
        # the attention mask is dropped after the first step (a recurrent step has no use for it)
        inputs = GenerationMixin.prepare_inputs_for_generation(self, input_ids, **kwargs)
        if kwargs.get("use_cache") and not kwargs.get("is_first_iteration"):
            inputs["attention_mask"] = None
        return inputs

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward creates an SSMCache


class SelectiveScanMixer(MambaMixer):
    """transformers' ``MambaMixer`` (same parameters, names and initialisation) running ``selective_scan``.

    in_proj → causal depthwise conv → x_proj → dt_proj + softplus → scan → out_proj, as the library's mixer, except
    that the scan is linear in T forward and backward, and that with a cache every call (one token or many) continues
    the cached conv and SSM states. The scan runs in float32 at least (float64 for a float64 model; the library rounds
    A, B, x, D and the dt bias to float32 even there). The library's kernel switches (``use_mambapy``,
    ``use_associative_scan``, the mamba-ssm/causal-conv1d kernels) do not apply.
    """

    # dt_proj's weight is used directly, not through the module: fire its offloading hooks like the library does
    @force_accelerate_hooks(["dt_proj"])
    def forward(
        self,
        hidden_states: Tensor,
        cache_params: Cache | None = None,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """(batch, T, hidden) -> (batch, T, hidden); with ``cache_params`` (a transformers cache of Mamba layers),
        starts from its conv and SSM states of this layer (if it has any) and updates them to the end of the input.

        ``attention_mask`` (batch, T) zeroes padded positions before the projection and after the conv, as the
        library's mixer does. The cache may come as ``cache`` instead (transformers 5.24 on); other ``kwargs`` (the
        library's signature) are not used.
        """
        cache_params = given_cache(cache_params=cache_params, cache=kwargs.get("cache"))  # 5.24 passes ``cache``
        seq, dtype = hidden_states.shape[1], hidden_states.dtype
        scan_dtype = torch.promote_types(dtype, torch.float32)
        state = None if cache_params is None else cache_params.get_recurrent_state(self.layer_idx)
        hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)
        x, gate = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)  # (batch, d_inner, T) each
        if cache_params is not None:
            # the cached last conv inputs, then these: the conv sees its left context across calls
            x = cache_params.update_conv_state(x, self.layer_idx, conv_kernel_size=self.conv_kernel_size)
        width = x.shape[-1]
        x = self.act(self.conv1d(x)[..., width - seq : width])  # conv1d pads both ends: keep the causal outputs
        x = apply_mask_to_padding_states(x.transpose(1, 2), attention_mask)  # (batch, T, d_inner)
        dt, B, C = self.x_proj(x).split([self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        # bias added in the scan's precision, as the library does: dt = softplus(bias + W dt_low) spans decades
        dt = F.softplus(F.linear(dt, self.dt_proj.weight).to(scan_dtype) + self.dt_proj.bias.to(scan_dtype))
        A = -torch.exp(self.A_log.to(scan_dtype))
        y, state = selective_scan(
            x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), self.D, gate, state
        )
        if cache_params is not None:
            cache_params.update_recurrent_state(state, self.layer_idx)
        return self.out_proj(y.transpose(1, 2).to(dtype))


class SelectiveScanForCausalLM(CallContract, MambaForCausalLM):
    """transformers ``MambaForCausalLM`` (Mamba-1, selective scan) with ``past_key_values`` in and out, and our
    ``SelectiveScanMixer`` in every layer."""

    config_class = MambaLMConfig
    library_class = MambaForCausalLM

    def __init__(self, config: MambaLMConfig) -> None:
        super().__init__(config)
        for layer in self.backbone.layers:
            # the library built and initialised each mixer; only its forward changes, so it keeps its parameters,
            # init flags and hooks by changing class (SelectiveScanMixer adds no state) rather than being rebuilt
            layer.mixer.__class__ = SelectiveScanMixer


class SSDForCausalLM(CallContract, Mamba2ForCausalLM):
    """transformers ``Mamba2ForCausalLM`` (Mamba-2, state-space duality) with the registry's call contract."""

    config_class = Mamba2LMConfig
    library_class = Mamba2ForCausalLM
