"""One registry of every architecture the project compares, all built at the same size presets.

``build(arch, size, **overrides)`` returns a transformers ``PreTrainedModel`` causal LM with one call contract:
``model(input_ids, labels=None, past_key_values=None, use_cache=...)`` returns ``.loss``, ``.logits`` and
``.past_key_values``; ``generate`` works with a cache; ``save_pretrained`` writes safetensors and ``load(dir)``
(``AutoModelForCausalLM.from_pretrained``) rebuilds any arch without being told which. Trainers and evaluators use
only that contract, plus ``streaming.prefill`` for long inputs, so they need no per-arch branches.

=================  ==========================================================
arch               implementation
=================  ==========================================================
ttt-linear         ours, ``TTTForCausalLM`` (``backbone="transformer"|"mamba"``)
ttt-mlp            ours, ``TTTForCausalLM`` with the TTT-MLP layer
transformer        transformers ``LlamaForCausalLM`` with SDPA attention
full-attention     ours, ``StackForCausalLM``: the TTT-E2E release's block
swa                ours, ``StackForCausalLM``: blocked sliding-window attention
hybrid             ours, ``StackForCausalLM``: 5 SWA, then 1 full attention
mamba              transformers ``MambaForCausalLM``, our selective scan
mamba2             transformers ``Mamba2ForCausalLM`` (adapted call contract)
gated-deltanet     ours, ``StackForCausalLM`` with ``layers.gated_deltanet``
gdn-swa            ours, ``StackForCausalLM``: Gated DeltaNet / SWA alternating
mamba2-swa         ours, ``StackForCausalLM``: transformers' Mamba-2 mixer / SWA
ttt-kvb            ours, ``StackForCausalLM``: LaCT's SWA + SwiGLU fast weight
ttt-kvb-linear     ours, ``StackForCausalLM``: SWA + TTT-Linear, large b
ttt-e2e            ours, ``E2EForCausalLM``: SWA + MLPs updated at test time
=================  ==========================================================

Every arch's cache continues a multi-token call exactly, so ``streaming.prefill`` streams any of them in chunks.

Why ours for SWA/hybrid: transformers' Mistral/Ministral sliding-window attention builds a dense (T × T) mask for
SDPA (+1.4 GB measured at 16K tokens on "tiny", quadratic: ≈ 5 GB at 32K); ``layers.attention`` works block by
block and keeps a rolling KV window.
Why ours for Gated DeltaNet: flash-linear-attention needs Triton and a GPU; ``layers.gated_deltanet`` is plain
PyTorch and calls the flash-linear-attention kernel itself on CUDA when the package is installed.
Why our scan for Mamba-1 (``models.ssm.SelectiveScanMixer``, same weights as the library's mixer): transformers'
pure-PyTorch scan (what runs without ``mamba_ssm``, so always on CPU) has a backward quadratic in T (245 s per
training step at tiny, 8 × 1024 tokens) and starts every multi-token call from a zero state; ``layers.selective_scan``
is linear in T forward and backward and starts from the cached state.

Widths: by default every arch has its papers' widths at the preset (paper 1's Transformer: the Mamba paper's Llama
recipe, MLP 2048 at 125m; Mamba and Mamba-2: 2 layers per Transformer block, the Mamba papers' depth, expand 2).
Parameter matching is an option of the comparison runners (the training config's ``model.match_params``, which an
experiment sets in its ``train_config`` or an arm's ``settings``), not of the model: ``match_params="ttt-linear"``
solves each arch's width so that its parameter count matches TTT-Linear's with the Transformer backbone at the
preset: the MLP width (``intermediate_size``, a multiple of 8) for the models with an MLP, Mamba-1's inner width
d_inner (``intermediate_size``), Mamba-2's number of layers (its width must be ``expand × hidden``). ttt-e2e is
never solved (the release's own sizes, ``E2E_PRESETS``); an explicit width override is kept as given.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel

from tttlm.models.e2e.configuration import E2EConfig
from tttlm.models.e2e.modeling import E2EForCausalLM
from tttlm.models.ssm.configuration import Mamba2LMConfig, MambaLMConfig
from tttlm.models.ssm.modeling import SelectiveScanForCausalLM, SSDForCausalLM
from tttlm.models.stack.configuration import StackConfig
from tttlm.models.stack.modeling import StackForCausalLM
from tttlm.models.ttt.configuration import PRESETS, TTTConfig
from tttlm.models.ttt.modeling import TTTForCausalLM

SIZES = tuple(PRESETS)
# config attribute that records the registry name (saved in config.json, read back by ``arch_of``)
ARCH_ATTR = "tttlm_arch"
# dims every arch takes from the TTT preset; overriding one of them changes the reference model too
SHARED_DIMS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
MLP_WIDTH_MULTIPLE = 8
# the models ``match_params`` can match parameter counts to (the reference's registry name)
MATCH_REFERENCES = ("ttt-linear",)
# knobs every arch takes that are no config field (see ``build``)
REGISTRY_KNOBS = ("short_conv",)

# Per-size defaults of the baselines' own knobs. The TTT-E2E paper uses window k = 8K and TTT-KVB mini-batch
# b = 1K at 3B parameters and 8K-128K context; scaled down here to the 2K pre-training context of paper 1 (k = 2K,
# b = k / 8). "tiny" is for CI: short windows so that tests cross them.
SLIDING_WINDOW = {"tiny": 64, "default": 2048}
# SWA and full attention as the TTT-E2E paper ran its baselines: the release's block (ttt/model/transformer.py,
# attention.py; configs/experiment/*/pretrain/pretrain-*-fa.yaml): pre- and post-RMSNorm on every sub-block, per-head
# QK-norm, interleaved RoPE with θ 500K
RELEASE_BLOCK = {"qk_norm": True, "post_norm": True, "rope_pairing": "interleaved", "rope_theta": 500000.0}
# paper 2's full attention at context extension raises RoPE θ with the context (its Appendix: 1M, 2M, 5M, 10M at
# 16K, 32K, 64K, 128K after pre-training at 8K with 500K; the release ships configs/experiment/*/extension/
# ext-*-fa-32K.yaml with 2M and ext-3b-fa-128K.yaml with 10M). Keyed by the extension factor, context / pre-training
# context, so that the cpu scale (pre-training at k = 64) takes the same θ at the same factor
EXTENSION_ROPE_THETA = {1: 500000.0, 2: 1e6, 4: 2e6, 8: 5e6, 16: 1e7}
# hybrid: "five SWA layers followed by one full attention layer" (TTT-E2E paper, §3.1): full attention every 6th
# layer at every size. tiny: 6 layers (SSSSSF) instead of the preset's 2, to keep the ratio, at half the width
# (32, 2 heads: the same head dim 16) so that its parameter count still matches the tiny reference
FULL_ATTENTION_EVERY = 6
HYBRID_TINY = {"tiny": {"num_hidden_layers": 6, "hidden_size": 32, "num_attention_heads": 2}}
# Gated DeltaNet: flash-linear-attention's defaults (fla/layers/gated_deltanet.py: head_dim 256, num_heads 6 at
# hidden 2048, i.e. a key width of 0.75 × hidden, expand_v 2); the heads follow from the 0.75 ratio (StackConfig).
# tiny: head dim 16 (3 heads at width 64).
GDN_HEAD_DIM = {"tiny": 16, "default": 256}


def _alternating_with_swa(mixer: str) -> Callable[[str, int, dict[str, Any]], list[list[str]]]:
    """``mixer`` in the even-numbered layers, sliding-window attention in the odd ones: Samba's layout
    (microsoft/Samba lit_gpt/config.py ``Samba_*``: mb_per_layer 2, local_window 2048, Mamba layers at
    layer_idx % 2 == 0) and Gated DeltaNet-H1's, built on Samba's code (NVlabs/GatedDeltaNet lit_gpt/config.py
    ``GatedDeltaNet_H1_*``: gated_delta_per_layer 2, local_window 2048)."""
    return lambda size, layers, overrides: [[mixer] if i % 2 == 0 else ["sliding_attention"] for i in range(layers)]


KVB_MINI_BATCH = {"tiny": 64, "default": 256}
# TTT-KVB as the TTT-E2E paper ran it (its reference [110], LaCT), in the LaCT release's LM configs
# (lact_llm/configs/760M_*.json, 3B_*.json): one chunk per window (lact_chunk_size = window_size = 2048), 4 fast-weight
# heads of width hidden / 4 (inter_multi 1), initial w0/w2 low rank 32 plus ½ I, momentum on, Muon off, RoPE θ 1e6.
# tiny: chunk = window = 64 and rank 4 for its fast head width 16 (LaCT's rank / width is 32 / 384 at 760M).
LACT_CHUNK = {"tiny": 64, "default": 2048}
LACT_LOW_RANK = {"tiny": 4, "default": 32}
LACT_ROPE_THETA = 1e6
# TTT-E2E: the release's sizes (``models/e2e/configuration.E2E_PRESETS``, window 8K and b = 1K at every size but
# tiny); paper 1's 1.3b has the release's 1b shape
E2E_SIZE_OF = {"1.3b": "1b"}
# Mamba-2: head dim 64, one group, state 128, chunk 256 (the Mamba-2 paper's settings); tiny: smaller (state 8: its
# layer count is the solved width, and 4 layers of state 8 come within 5% of the tiny reference's parameters)
MAMBA2 = {
    "tiny": {"head_dim": 16, "state_size": 8, "chunk_size": 64},
    "default": {"head_dim": 64, "state_size": 128, "chunk_size": 256},
}


# the same Mamba-2 settings as the stack's "mamba2" mixer fields (mamba2-swa)
MAMBA2_MIXER = {
    f"mamba2_{name}": {size: settings[name] for size, settings in MAMBA2.items()}
    for name in ("head_dim", "state_size", "chunk_size")
}


def _per_size(table: dict[str, Any], size: str) -> Any:
    return table.get(size, table["default"])


@dataclass(frozen=True)
class ArchSpec:
    """How to build one arch.

    Attributes:
        name: registry name.
        summary: one line for tables.
        model_class: the ``PreTrainedModel`` class built.
        config_class: its config class (overrides must be its fields, or ``extra_knobs``).
        make_config: ``(size, dims, overrides) -> config``; dims are the preset's shared dims (a ``TTTConfig``).
        width_field: the config field solved to match parameter counts (None: never solved).
        width_multiple: granularity of that field.
        extra_knobs: registry-level overrides that are not config fields.
    """

    name: str
    summary: str
    model_class: type[PreTrainedModel]
    config_class: type[PretrainedConfig]
    make_config: Callable[[str, TTTConfig, dict[str, Any]], PretrainedConfig]
    width_field: str | None
    width_multiple: int = 1
    extra_knobs: tuple[str, ...] = ()


def _common(dims: TTTConfig) -> dict[str, Any]:
    """Fields every config shares with the TTT preset (special tokens, norms, init, tied head)."""
    return {
        "vocab_size": dims.vocab_size,
        "tie_word_embeddings": dims.tie_word_embeddings,
        "initializer_range": dims.initializer_range,
        "pad_token_id": dims.pad_token_id,
        "bos_token_id": dims.bos_token_id,
        "eos_token_id": dims.eos_token_id,
    }


def _transformer_dims(dims: TTTConfig) -> dict[str, Any]:
    return {
        **_common(dims),
        "hidden_size": dims.hidden_size,
        "intermediate_size": dims.intermediate_size,
        "num_hidden_layers": dims.num_hidden_layers,
        "num_attention_heads": dims.num_attention_heads,
        "rms_norm_eps": dims.rms_norm_eps,
        "rope_theta": dims.rope_theta,
    }


def _short_conv(overrides: dict[str, Any]) -> bool:
    """Pop the registry knob ``short_conv`` (a depthwise causal conv sub-block before each mixer, Zoology's recipe)."""
    value = overrides.pop("short_conv", False)
    if not isinstance(value, bool):
        raise ValueError(f"short_conv must be True or False; got {value!r}")
    return value


def _conv_built_in(arch: str, overrides: dict[str, Any]) -> None:
    """The Mamba mixers start with their own short conv: short_conv=True is what they are already."""
    if "short_conv" in overrides and not _short_conv(overrides):
        raise ValueError(
            f"{arch}: its mixer starts with a short causal conv (conv_kernel); short_conv=False cannot remove it"
        )


def _ttt_config(layer_type: str) -> Callable[[str, TTTConfig, dict[str, Any]], PretrainedConfig]:
    def make(size: str, dims: TTTConfig, overrides: dict[str, Any]) -> PretrainedConfig:
        overrides = dict(overrides)
        if _short_conv(overrides):
            if overrides.get("pre_conv") is False:
                raise ValueError(
                    "short_conv=True is the TTT models' pre_conv sub-block; do not also pass pre_conv=False"
                )
            overrides["pre_conv"] = True
        return TTTConfig.from_preset(size, **{"layer_type": layer_type, **overrides})

    return make


def _llama_config(size: str, dims: TTTConfig, overrides: dict[str, Any]) -> PretrainedConfig:
    if overrides.get("short_conv"):
        # Llama's blocks take no extra sub-block: full attention with a short conv is built as a stack model
        # (our blocked attention, RoPE, SwiGLU: the same block otherwise), saved and reloaded as such
        return _stack_config(_every_layer("full_attention"))(size, dims, overrides)
    overrides = dict(overrides)
    _short_conv(overrides)
    values = {
        **_transformer_dims(dims),
        "num_key_value_heads": dims.num_attention_heads,
        "attn_implementation": "sdpa",
        # informational for Llama's default RoPE; long-context evaluation goes beyond the 2K training context
        "max_position_embeddings": 131072,
    }
    return LlamaConfig(**{**values, **overrides})


def _stack_config(
    mixers: Callable[[str, int, dict[str, Any]], list[list[str]]],
    shape_by_size: dict[str, dict[str, int]] | None = None,
    **defaults: Any,
) -> Callable:
    """``make_config`` of a stack arch: ``mixers(size, layers, overrides)`` gives the blocks' mixers, ``defaults``
    the config fields (a dict value: per size); ``shape_by_size[size]`` replaces preset dims (layers, width, heads)
    at a size unless overridden."""

    def make(size: str, dims: TTTConfig, overrides: dict[str, Any]) -> PretrainedConfig:
        overrides = {**(shape_by_size or {}).get(size, {}), **overrides}
        layers = overrides.get("num_hidden_layers", dims.num_hidden_layers)
        sized = {k: _per_size(v, size) if isinstance(v, dict) else v for k, v in defaults.items()}
        conv = ["short_conv"] if _short_conv(overrides) else []
        layer_mixers = [conv + names for names in mixers(size, layers, overrides)]
        values = {**_transformer_dims(dims), **sized, "layer_mixers": layer_mixers}
        return StackConfig(**{**values, **overrides})

    return make


def _every_layer(*names: str) -> Callable[[str, int, dict[str, Any]], list[list[str]]]:
    return lambda size, layers, overrides: [list(names) for _ in range(layers)]


def _hybrid_layers(size: str, layers: int, overrides: dict[str, Any]) -> list[list[str]]:
    every = overrides.pop("full_attention_every", FULL_ATTENTION_EVERY)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(
            f"hybrid: full_attention_every must be a positive integer N (every N-th layer uses full attention); "
            f"got {every!r}"
        )
    return [["full_attention" if (i + 1) % every == 0 else "sliding_attention"] for i in range(layers)]


def _full_attention_config(size: str, dims: TTTConfig, overrides: dict[str, Any]) -> PretrainedConfig:
    """Full attention in every block with the release's block; the knob ``rope_extension`` (a factor of
    ``EXTENSION_ROPE_THETA``) sets paper 2's RoPE θ for a context that many times the pre-training context."""
    overrides = dict(overrides)
    factor = overrides.pop("rope_extension", None)
    if factor is not None:
        if isinstance(factor, bool) or factor not in EXTENSION_ROPE_THETA:
            raise ValueError(
                f"full-attention: rope_extension must be the extension factor context / pre-training context, one of "
                f"{', '.join(map(str, EXTENSION_ROPE_THETA))} (paper 2's RoPE θ at each); got {factor!r}. For another "
                "factor set rope_theta yourself"
            )
        if "rope_theta" in overrides:
            raise ValueError(
                "full-attention: pass rope_extension (paper 2's θ for that factor) or rope_theta, not both"
            )
        overrides["rope_theta"] = EXTENSION_ROPE_THETA[factor]
    return _stack_config(_every_layer("full_attention"), **RELEASE_BLOCK)(size, dims, overrides)


def _e2e_config(size: str, dims: TTTConfig, overrides: dict[str, Any]) -> PretrainedConfig:
    # the release's shape at this size (its 1b is paper 1's 1.3b), our vocabulary and special tokens; the registry
    # knob short_conv is E2EConfig's own field (off by default: the release has no conv), which checks it
    return E2EConfig.from_preset(E2E_SIZE_OF.get(size, size), **{**_common(dims), **overrides})


def _mamba_config(size: str, dims: TTTConfig, overrides: dict[str, Any]) -> PretrainedConfig:
    overrides = dict(overrides)
    _conv_built_in("mamba", overrides)
    # initializer_range 0.02 like every other arch (and the original mamba_ssm embedding init), not the library's
    # default 0.1; the library still initialises A, dt, D and the conv its own way
    values = {
        **_common(dims),
        "hidden_size": dims.hidden_size,
        "num_hidden_layers": 2 * dims.num_hidden_layers,
        "state_size": 16,
        "expand": 2,
        "conv_kernel": 4,
        "layer_norm_epsilon": dims.rms_norm_eps,
    }
    return MambaLMConfig(**{**values, **overrides})


def _mamba2_config(size: str, dims: TTTConfig, overrides: dict[str, Any]) -> PretrainedConfig:
    overrides = dict(overrides)
    _conv_built_in("mamba2", overrides)
    settings = _per_size(MAMBA2, size)
    hidden = dims.hidden_size
    expand = overrides.get("expand", 2)
    head_dim = overrides.get("head_dim", settings["head_dim"])
    values = {
        **_common(dims),
        "hidden_size": dims.hidden_size,
        "num_hidden_layers": 2 * dims.num_hidden_layers,
        "expand": expand,
        "num_heads": expand * hidden // head_dim,
        "n_groups": 1,
        "conv_kernel": 4,
        "layer_norm_epsilon": dims.rms_norm_eps,
        **settings,
    }
    return Mamba2LMConfig(**{**values, **overrides})


ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            "ttt-linear",
            "TTT-Linear (ours; backbone transformer|mamba)",
            TTTForCausalLM,
            TTTConfig,
            _ttt_config("linear"),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "ttt-mlp",
            "TTT-MLP (ours; backbone transformer|mamba)",
            TTTForCausalLM,
            TTTConfig,
            _ttt_config("mlp"),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "transformer",
            "full causal attention (transformers Llama, SDPA)",
            LlamaForCausalLM,
            LlamaConfig,
            _llama_config,
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
            ("rope_theta", "attn_implementation"),
        ),
        ArchSpec(
            "full-attention",
            "full causal attention with the TTT-E2E release's block (pre+post RMSNorm, QK-norm, RoPE θ 500K; ours)",
            StackForCausalLM,
            StackConfig,
            _full_attention_config,
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
            ("rope_extension",),
        ),
        ArchSpec(
            "swa",
            "sliding-window attention (ours, blocked)",
            StackForCausalLM,
            StackConfig,
            _stack_config(_every_layer("sliding_attention"), sliding_window=SLIDING_WINDOW, **RELEASE_BLOCK),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "hybrid",
            "SWA with full attention every N-th layer (ours)",
            StackForCausalLM,
            StackConfig,
            _stack_config(_hybrid_layers, HYBRID_TINY, sliding_window=SLIDING_WINDOW, **RELEASE_BLOCK),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
            ("full_attention_every",),
        ),
        ArchSpec(
            "mamba",
            "Mamba (transformers MambaForCausalLM, our selective scan)",
            SelectiveScanForCausalLM,
            MambaLMConfig,
            _mamba_config,
            # d_inner: the layer count alone is too coarse at "tiny" (one layer is ±20 % of the model)
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
            ("intermediate_size",),
        ),
        ArchSpec(
            "mamba2",
            "Mamba-2 (transformers Mamba2ForCausalLM)",
            SSDForCausalLM,
            Mamba2LMConfig,
            _mamba2_config,
            "num_hidden_layers",
        ),
        ArchSpec(
            "gated-deltanet",
            "Gated DeltaNet (ours, plain PyTorch; fla on CUDA)",
            StackForCausalLM,
            StackConfig,
            _stack_config(_every_layer("gated_deltanet"), gdn_head_dim=GDN_HEAD_DIM),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "gdn-swa",
            "Gated DeltaNet-H1: Gated DeltaNet and SWA layers alternating (ours, as the TTT-E2E paper's hybrids)",
            StackForCausalLM,
            StackConfig,
            _stack_config(
                _alternating_with_swa("gated_deltanet"), gdn_head_dim=GDN_HEAD_DIM, sliding_window=SLIDING_WINDOW
            ),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "mamba2-swa",
            "Mamba-2 and SWA layers alternating, each with an MLP (Samba's layout, as the TTT-E2E paper's hybrids)",
            StackForCausalLM,
            StackConfig,
            _stack_config(_alternating_with_swa("mamba2"), sliding_window=SLIDING_WINDOW, **MAMBA2_MIXER),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "ttt-kvb",
            "LaCT: SWA + a SwiGLU fast weight per head updated once per chunk (= window), as the TTT-E2E paper's [110]",
            StackForCausalLM,
            StackConfig,
            _stack_config(
                _every_layer("lact"),
                sliding_window=SLIDING_WINDOW,
                lact_chunk_size=LACT_CHUNK,
                lact_low_rank=LACT_LOW_RANK,
                rope_theta=LACT_ROPE_THETA,
            ),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "ttt-kvb-linear",
            "SWA + TTT-Linear (key-value binding), large mini-batch (ours; paper 1's layer)",
            StackForCausalLM,
            StackConfig,
            _stack_config(
                _every_layer("sliding_attention", "ttt"),
                sliding_window=SLIDING_WINDOW,
                ttt_mini_batch_size=KVB_MINI_BATCH,
                ttt_layer_type="linear",
            ),
            "intermediate_size",
            MLP_WIDTH_MULTIPLE,
        ),
        ArchSpec(
            "ttt-e2e",
            "SWA + MLPs of the last L/4 blocks updated at test time, meta-learned (the release's block)",
            E2EForCausalLM,
            E2EConfig,
            _e2e_config,
            None,
        ),
    )
}


def _spec(arch: object) -> ArchSpec:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)} (tttlm models lists them)")
    return ARCHS[arch]  # type: ignore[index]


def _size(size: object) -> str:
    key = size.lower() if isinstance(size, str) else size
    if key not in PRESETS:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(PRESETS)}")
    return key  # type: ignore[return-value]


def _fields(config_class: type[PretrainedConfig]) -> set[str]:
    # transformers 5 configs are dataclasses; ours (and 4.x ones) take their fields in __init__
    names = set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"}
    if dataclasses.is_dataclass(config_class):
        names |= {field.name for field in dataclasses.fields(config_class)}
    return names


def _check_overrides(spec: ArchSpec, overrides: dict[str, Any]) -> None:
    allowed = _fields(spec.config_class) | set(spec.extra_knobs) | set(REGISTRY_KNOBS)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(
            f"{spec.name}: unknown override(s) {', '.join(map(repr, unknown))}; overrides must be fields of "
            f"{spec.config_class.__name__} or {list(spec.extra_knobs) or 'no other knobs'}. "
            f"Valid names: {', '.join(sorted(allowed))}"
        )


def count_parameters(config: PretrainedConfig, model_class: type[PreTrainedModel] | None = None) -> int:
    """Number of parameters of the model a config describes (tied weights once), built on the meta device."""
    model_class = model_class or _class_for_config(config)
    # memoised on the config's JSON: tables and width solving count the same reference model many times
    key = (model_class, config.to_json_string(use_diff=False))
    if key not in _COUNTS:
        with torch.device("meta"):
            model = model_class(config)
        _COUNTS[key] = sum(p.numel() for p in model.parameters())
    return _COUNTS[key]


_COUNTS: dict[tuple[type, str], int] = {}


def _class_for_config(config: PretrainedConfig) -> type[PreTrainedModel]:
    for spec in ARCHS.values():
        if type(config) is spec.config_class:
            return spec.model_class
    raise TypeError(f"no registry arch uses {type(config).__name__}")


def _is_reference(spec: ArchSpec, overrides: dict[str, Any]) -> bool:
    return spec.name == "ttt-linear" and overrides.get("backbone", "transformer") == "transformer"


def solves_width(arch: str, overrides: dict[str, Any]) -> bool:
    """Whether ``match_params`` changes ``arch`` built with ``overrides``: False for the reference itself, for
    ttt-e2e (never solved) and when the overrides give the width."""
    spec = _spec(arch)
    return spec.width_field is not None and spec.width_field not in overrides and not _is_reference(spec, overrides)


def reference_config(size: str, **overrides: Any) -> TTTConfig:
    """The model every arch of ``size`` is matched to: TTT-Linear, Transformer backbone, with the shared overrides."""
    return TTTConfig.from_preset(_size(size), **{k: v for k, v in overrides.items() if k in SHARED_DIMS})


def _solve_width(spec: ArchSpec, config_at: Callable[[int], PretrainedConfig], start: int, target: int) -> int:
    """The width whose parameter count is closest to ``target`` (counts are affine in the width)."""
    step = 8 * spec.width_multiple
    low, high = (
        count_parameters(config_at(start)),
        count_parameters(config_at(start + step)),
    )
    slope = (high - low) / step
    width = round((start + (target - low) / slope) / spec.width_multiple) * spec.width_multiple
    if width < spec.width_multiple:
        raise ValueError(
            f"{spec.name}: cannot match the reference's {target:,} parameters by changing {spec.width_field} (it would "
            f"need {width}); build without match_params or set {spec.width_field} yourself"
        )
    return width


def matches_params(match_params: object) -> bool:
    """Whether ``match_params`` asks for matched widths: None or False for the arch's own widths, a name of
    ``MATCH_REFERENCES`` for matching; anything else is refused, naming the choices."""
    if match_params is None or match_params is False:
        return False
    if isinstance(match_params, str) and match_params in MATCH_REFERENCES:
        return True
    raise ValueError(
        f"match_params must be None (the papers' widths) or the model whose parameter count to match, one of "
        f"{', '.join(map(repr, MATCH_REFERENCES))}; got {match_params!r}"
    )


def make_config(
    arch: str, size: str = "tiny", *, match_params: str | None = None, **overrides: Any
) -> PretrainedConfig:
    """The config ``build`` would use (see ``build``); cheap, nothing is allocated except for parameter counting
    on the meta device."""
    spec, size = _spec(arch), _size(size)
    _check_overrides(spec, overrides)
    dims = reference_config(size, **overrides)

    def config_at(width: int | None) -> PretrainedConfig:
        values = dict(overrides) if width is None else {**overrides, spec.width_field: width}
        config = spec.make_config(size, dims, values)
        setattr(config, ARCH_ATTR, spec.name)
        return config

    if not (matches_params(match_params) and solves_width(arch, overrides)):
        return config_at(None)
    start = getattr(config_at(None), spec.width_field)
    target = count_parameters(dims, TTTForCausalLM)
    return config_at(_solve_width(spec, config_at, start, target))


def build(arch: str, size: str = "tiny", *, match_params: str | None = None, **overrides: Any) -> PreTrainedModel:
    """A freshly initialised causal LM of architecture ``arch`` at size preset ``size``.

    Args:
        arch: one of ``ARCHS`` ("ttt-linear", "ttt-mlp", "transformer", "full-attention", "swa", "hybrid", "mamba",
            "mamba2", "gated-deltanet", "gdn-swa", "mamba2-swa", "ttt-kvb", "ttt-kvb-linear", "ttt-e2e").
        size: a preset of ``TTTConfig`` ("tiny", "125m", "350m", "760m", "1.3b").
        match_params: None (or False): the arch's own widths at the preset, the papers'; "ttt-linear": its width
            solved so that its parameter count matches TTT-Linear's (Transformer backbone) at this size.
        **overrides: fields of the arch's config class (e.g. ``backbone="mamba"`` for the TTT archs,
            ``sliding_window=512`` for swa/hybrid/ttt-kvb/ttt-e2e, ``lact_chunk_size=512`` for ttt-kvb,
            ``ttt_mini_batch_size=128`` for ttt-kvb-linear,
            ``mini_batch_size=64``, ``inner_lr=0.5`` for ttt-e2e,
            ``state_size=...`` for mamba), ``full_attention_every=N`` for hybrid, ``rope_extension=F`` for
            full-attention (paper 2's RoPE θ at F × the pre-training context, ``EXTENSION_ROPE_THETA``), and for
            every arch ``short_conv=True``: a sub-block ``x + CausalConv(RMSNorm(x))`` (kernel ``conv_kernel``)
            before each mixer, Zoology's short convolution (the TTT models' ``pre_conv``; a stack model for
            ``transformer``; what the Mamba mixers have already; ``E2EConfig.short_conv``, off in the release,
            for ttt-e2e). Overriding a shared dim
            (``hidden_size``, ``num_hidden_layers``, ...) changes the reference model as well.

    Build under ``torch.device("meta")`` to get shapes only (instant at any size).
    """
    config = make_config(arch, size, match_params=match_params, **overrides)
    return _class_for_config(config)(config)


def param_count(arch: str, size: str = "tiny", *, match_params: str | None = None, **overrides: Any) -> int:
    """Number of parameters of ``build(arch, size, **overrides)`` (tied weights once), counted on the meta device."""
    return count_parameters(make_config(arch, size, match_params=match_params, **overrides))


def arch_of(model_or_config: PreTrainedModel | PretrainedConfig) -> str | None:
    """The registry name a model was built as (stored in its config, so it survives save/load), or None."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, ARCH_ATTR, None)


def load(path: str | Path, **kwargs: Any) -> PreTrainedModel:
    """Reload any registry model from a ``save_pretrained`` directory (safetensors), whatever its arch.

    ``kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (e.g. ``dtype="auto"``); our own classes are
    registered with the Auto classes when ``tttlm`` is imported.
    """
    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
