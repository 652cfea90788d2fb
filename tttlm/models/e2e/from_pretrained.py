"""``tttlm e2e-init``: a TTT-E2E model from a pretrained Transformer of the Llama family (the TTT-E2E paper's §3.7
future work: start meta-learning from a model pretrained without test-time training).

Sources: a ``save_pretrained`` directory of ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM`` or
``Qwen3ForCausalLM`` (config.json + safetensors; never a pickle). What is carried over, block by block:

    input_layernorm, self_attn.{q,k,v,o}_proj (+ biases), q_norm/k_norm   →  attn_norm, attn (sliding window k)
    post_attention_layernorm, mlp.{gate,up,down}_proj                    →  ffn_norm, mlp (the static MLP)
    model.embed_tokens, model.norm, lm_head                              →  the same

with the source's grouped-query heads, head width, QK-norm (Qwen3), RoPE (base, rotate-half pairing, and its scaling:
``rope_parameters``), no post-norms (the source has none). The last ``updated_fraction`` of the blocks get a prime
MLP, placed before the static MLP as in the release, in one of two ways (``prime_init``):

* ``"mlp"`` (default): the block's MLP becomes the prime MLP (its norm and weights; test-time training then adapts
  the pretrained MLP itself) and the static MLP starts with a zero output projection;
* ``"zero"``: the static MLP is the block's MLP and the prime MLP starts as a copy of it whose output projection is
  zero (the first inner step moves the output projection only).

Either way the new model's output equals the source's exactly where the source attends within the window and the
inner learning rate is 0: ``h + attn(h) + MLP(h)`` plus a zero term.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import AutoConfig, PretrainedConfig

from tttlm.models.checkpoint_files import safetensors_files
from tttlm.models.e2e.configuration import SCALED_ROPE_TYPES, E2EConfig
from tttlm.models.e2e.modeling import E2EForCausalLM
from tttlm.models.e2e.weights import e2e_with_weights

# model_type → whether its q/k/v (and output) projections have biases, and whether it has QK-norm
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"qk_norm": False},
    "mistral": {"qk_norm": False},
    "qwen2": {"qk_norm": False, "qkv_bias": True, "o_bias": False},
    "qwen3": {"qk_norm": True},
}
PRIME_INITS = ("mlp", "zero")


class SourceModelError(ValueError):
    """A source checkpoint this conversion cannot represent exactly; the message says what and why."""


def _source_config(source: Path) -> PretrainedConfig:
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source / 'config.json'} not found: pass a save_pretrained directory of the model")
    config = AutoConfig.from_pretrained(source)
    if config.model_type not in FAMILIES:
        raise SourceModelError(
            f"{source} holds a {config.model_type!r} model; e2e-init reads the Llama family: "
            f"{', '.join(sorted(FAMILIES))}"
        )
    if getattr(config, "hidden_act", "silu") != "silu":
        raise SourceModelError(f"the source MLP uses {config.hidden_act}; TTT-E2E's SwiGLU needs silu")
    if getattr(config, "mlp_bias", False):
        raise SourceModelError("the source MLP has biases (mlp_bias); TTT-E2E's MLPs have none")
    return config


def _rope(config: PretrainedConfig) -> tuple[float, dict[str, Any] | None]:
    """The source's RoPE base and its scaling (None: plain RoPE)."""
    parameters = dict(getattr(config, "rope_parameters", None) or {})
    theta = float(parameters.pop("rope_theta", getattr(config, "rope_theta", 10000.0)))
    rope_type = parameters.get("rope_type", "default")
    if parameters.get("partial_rotary_factor", 1.0) != 1.0:
        raise SourceModelError("the source rotates only part of each head (partial_rotary_factor); not supported")
    if rope_type == "default":
        return theta, None
    if rope_type not in SCALED_ROPE_TYPES:
        raise SourceModelError(
            f"the source's RoPE scaling {rope_type!r} depends on the input length; supported: "
            f"{', '.join(SCALED_ROPE_TYPES)}"
        )
    return theta, parameters


def e2e_config_from(
    config: PretrainedConfig, *, window: int, mini_batch_size: int, updated_fraction: float, inner_lr: float = 1.0
) -> E2EConfig:
    """The ``E2EConfig`` of the converted model (the source's dims, our window, b and updated fraction)."""
    family = FAMILIES[config.model_type]
    bias = bool(getattr(config, "attention_bias", False))
    theta, scaled = _rope(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return E2EConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=None if head_dim == config.hidden_size // config.num_attention_heads else head_dim,
        attention_qkv_bias=family.get("qkv_bias", bias),
        attention_o_bias=family.get("o_bias", bias),
        qk_norm=family["qk_norm"],
        post_norm=False,
        rope_pairing="half",
        rope_theta=theta,
        scaled_rope=scaled,
        sliding_window=window,
        mini_batch_size=mini_batch_size,
        updated_fraction=updated_fraction,
        inner_lr=inner_lr,
        rms_norm_eps=config.rms_norm_eps,
        initializer_range=getattr(config, "initializer_range", 0.02),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id if isinstance(config.eos_token_id, int) else None,
        pad_token_id=config.pad_token_id,
    )


def e2e_state_dict(source: dict[str, Tensor], config: E2EConfig, prime_init: str = "mlp") -> dict[str, Tensor]:
    """Our state dict from the source's (names of ``LlamaForCausalLM.state_dict()``), per the module docstring."""
    if prime_init not in PRIME_INITS:
        raise ValueError(f"prime_init must be one of {', '.join(PRIME_INITS)}; got {prime_init!r}")
    left = set(source)

    def take(name: str) -> Tensor:
        if name not in source:
            raise SourceModelError(f"the source checkpoint lacks {name}")
        left.discard(name)
        return source[name]

    out = {
        "model.embed_tokens.weight": take("model.embed_tokens.weight"),
        "model.norm.weight": take("model.norm.weight"),
    }
    out["lm_head.weight"] = out["model.embed_tokens.weight"] if config.tie_word_embeddings else take("lm_head.weight")
    left.discard("lm_head.weight")  # a tied checkpoint may store it anyway
    projections = {"q_proj": config.attention_qkv_bias, "k_proj": config.attention_qkv_bias}
    projections |= {"v_proj": config.attention_qkv_bias, "o_proj": config.attention_o_bias}
    for i in range(config.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"model.layers.{i}."
        out[dst + "attn_norm.weight"] = take(src + "input_layernorm.weight")
        for proj, bias in projections.items():
            out[f"{dst}attn.{proj}.weight"] = take(f"{src}self_attn.{proj}.weight")
            if bias:
                out[f"{dst}attn.{proj}.bias"] = take(f"{src}self_attn.{proj}.bias")
        if config.qk_norm:
            for norm in ("q_norm", "k_norm"):
                out[f"{dst}attn.{norm}.weight"] = take(f"{src}self_attn.{norm}.weight")
        norm = take(src + "post_attention_layernorm.weight")
        mlp = {name: take(f"{src}mlp.{name}.weight") for name in ("gate_proj", "up_proj", "down_proj")}
        out[dst + "ffn_norm.weight"] = norm
        for name, weight in mlp.items():
            out[f"{dst}mlp.{name}.weight"] = weight.clone()
        if i < config.first_updated_layer:
            continue
        # the prime MLP's fast weights are (in, out): the transposes of the nn.Linear weights
        out[dst + "prime.norm.weight"] = norm.clone()
        out[dst + "prime.gate"] = mlp["gate_proj"].T.contiguous()
        out[dst + "prime.up"] = mlp["up_proj"].T.contiguous()
        out[dst + "prime.down"] = mlp["down_proj"].T.contiguous()
        zeroed = dst + ("mlp.down_proj.weight" if prime_init == "mlp" else "prime.down")
        out[zeroed] = torch.zeros_like(out[zeroed])
    # rotary caches some exports keep are derived, not weights
    leftover = sorted(name for name in left if not name.endswith("rotary_emb.inv_freq"))
    if leftover:
        raise SourceModelError(f"source weights with no place in TTT-E2E: {', '.join(leftover[:5])}")
    return out


def e2e_from_pretrained(
    source: str | Path,
    *,
    window: int,
    mini_batch_size: int,
    updated_fraction: float = 0.25,
    prime_init: str = "mlp",
    inner_lr: float = 1.0,
) -> E2EForCausalLM:
    """The TTT-E2E model made from the pretrained model in ``source`` (see the module docstring), in float32."""
    source = Path(source)
    config = _source_config(source)
    files = safetensors_files(source)
    if not files:
        raise FileNotFoundError(f"no model*.safetensors in {source} (pickled .bin weights are not read)")
    weights: dict[str, Tensor] = {}
    for file in files:
        weights.update({name: tensor.float() for name, tensor in load_file(file).items()})
    e2e_config = e2e_config_from(
        config, window=window, mini_batch_size=mini_batch_size, updated_fraction=updated_fraction, inner_lr=inner_lr
    )
    state = e2e_state_dict(weights, e2e_config, prime_init)
    return e2e_with_weights(e2e_config, state, SourceModelError, "for the source's config")


# what a save_pretrained tokenizer consists of (whichever the source has)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)


def copy_tokenizer(source: str | Path, out: str | Path) -> list[str]:
    """Copy the source's tokenizer files (if any) beside the converted model, so it loads with its tokenizer; return
    their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, Path(out) / name)
            copied.append(name)
    return copied
