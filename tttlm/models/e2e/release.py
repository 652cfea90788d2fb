"""The TTT-E2E release's names for what ``E2EForCausalLM`` holds: its config fields and its parameter pytree.

The release (test-time-training/e2e, JAX/Equinox) names a parameter by its path in the ``MetaModel`` pytree, e.g.
``language_model.model.h.blocks.seq_modeling_block.wq.weight``. Its linear weights are (in, out) (``x @ W``, the
transpose of ``nn.Linear.weight``); ``h.blocks.*`` are stacked over all L blocks (leading axis = block index) and
``h.prime_storage.*`` over the last ``suffix_len`` blocks (the prime MLP and its two norms). ``release_config`` reads
its ``ModelConfig``/``TrainingConfig`` fields; ``from_release`` maps the tensors (the gradients of the release's
pytree map the same way as its parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from tttlm.models.e2e.configuration import E2E_PRESETS, RELEASE_VOCAB_SIZE, E2EConfig

ROOT = "language_model.model."
BLOCKS = ROOT + "h.blocks."
PRIME = ROOT + "h.prime_storage."
# the release's spec of the inner parameters: the prime MLPs' weights only (their norms are outer parameters)
INNER_SPEC = "language_model.**.suffix_blocks.feed_forward_prime.**"

# per block: release path under h.blocks → (our name under model.layers.<i>, transposed (a linear weight))
BLOCK_TENSORS: dict[str, tuple[str, bool]] = {
    "seq_norm.weight": ("attn_norm.weight", False),
    "seq_modeling_block.wq.weight": ("attn.q_proj.weight", True),
    "seq_modeling_block.wk.weight": ("attn.k_proj.weight", True),
    "seq_modeling_block.wv.weight": ("attn.v_proj.weight", True),
    "seq_modeling_block.wo.weight": ("attn.o_proj.weight", True),
    "seq_modeling_block.q_norm.weight": ("attn.q_norm.weight", False),
    "seq_modeling_block.k_norm.weight": ("attn.k_norm.weight", False),
    "seq_post_norm.weight": ("attn_post_norm.weight", False),
    "ffn_norm.weight": ("ffn_norm.weight", False),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", True),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", True),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", True),
    "ffn_post_norm.weight": ("ffn_post_norm.weight", False),
}
# per updated block j (block first_updated_layer + j): release path under h.prime_storage → our name under
# model.layers.<i>.prime; the fast weights keep the release's (in, out) layout
PRIME_TENSORS: dict[str, str] = {
    "ffn_prime_norm.weight": "norm.weight",
    "feed_forward_prime.w1.weight": "gate",
    "feed_forward_prime.w3.weight": "up",
    "feed_forward_prime.w2.weight": "down",
    "ffn_prime_post_norm.weight": "post_norm.weight",
}
GLOBAL_TENSORS: dict[str, tuple[str, bool]] = {
    ROOT + "wte.weight": ("model.embed_tokens.weight", False),
    ROOT + "ln_f.weight": ("model.norm.weight", False),
    "language_model.lm_head.weight": ("lm_head.weight", True),
}


# the released checkpoints' sizes (configs/model/<size>.yaml with the pretrain-<size>-e2e.yaml overrides)
RELEASE_SIZES = ("125m", "350m", "760m", "1b", "3b")


class ReleaseFormatError(ValueError):
    """A release config or checkpoint that this model cannot represent; the message says what and why."""


def release_config(model: Mapping[str, Any], training: Mapping[str, Any] | None = None, **overrides: Any) -> E2EConfig:
    """The ``E2EConfig`` of a release model.

    Args:
        model: the release's ``model`` config section (``ModelConfig`` field names, e.g. from a composed Hydra
            ``config.yaml`` or the fixture's ``config.json``).
        training: its ``training`` section (``optimizer_inner``, ``spec_inner``), or None for the recipes'
            inner step (SGD, lr 1, clip 1.0).
        overrides: E2EConfig fields to set on top (e.g. ``attention_block_size``).

    Raises:
        ReleaseFormatError: a release model that is not TTT-E2E as this class implements it (no prime MLP, no
            pre-norm, another sequence-modelling block, another inner optimiser or inner parameter set).
    """
    cfg = dict(model)
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ReleaseFormatError(f"release model config lacks {', '.join(missing)}; pass its whole `model` section")
    if cfg.get("seq_modeling_block", "SWA") not in ("SWA", "SWAFull"):
        raise ReleaseFormatError(
            f"release model has seq_modeling_block={cfg['seq_modeling_block']!r}: only sliding-window attention "
            "(SWA) is TTT-E2E; a full-attention release model is the baseline, not this architecture"
        )
    if not cfg.get("prime", False) or int(cfg.get("suffix_len", 0)) < 1:
        raise ReleaseFormatError(
            "release model has no updated blocks (prime: false or suffix_len: 0): that is the SWA baseline, not TTT-E2E"
        )
    if not cfg.get("pre_norm", True):
        raise ReleaseFormatError("release model has pre_norm: false; tttlm's TTT-E2E always pre-norms")
    if cfg.get("feed_forward_prime", "swiglu") != "swiglu":
        raise ReleaseFormatError(f"release feed_forward_prime={cfg['feed_forward_prime']!r}; only swiglu exists")
    layers, suffix = int(cfg["num_hidden_layers"]), int(cfg["suffix_len"])
    if suffix > layers:
        raise ReleaseFormatError(f"release suffix_len {suffix} exceeds num_hidden_layers {layers}")
    lr, clip = 1.0, 1.0
    if training is not None:
        inner = dict(training.get("optimizer_inner") or {})
        if inner.get("optimizer_type", "sgd") != "sgd":
            raise ReleaseFormatError(f"release inner optimizer {inner['optimizer_type']!r}: only sgd is implemented")
        lr = float(inner.get("lr", lr))
        clip = float(inner.get("clip_gradient", clip))
        spec = list(training.get("spec_inner", [INNER_SPEC]))
        if spec != [INNER_SPEC]:
            raise ReleaseFormatError(f"release spec_inner {spec}: only {[INNER_SPEC]} (the prime MLPs) is implemented")
    values = {
        "vocab_size": int(cfg["vocab_size"]),
        "hidden_size": int(cfg["hidden_size"]),
        "intermediate_size": int(cfg["intermediate_size"]),
        "num_hidden_layers": layers,
        "num_attention_heads": int(cfg["num_attention_heads"]),
        "sliding_window": int(cfg.get("sliding_window_size", 1024)),
        "mini_batch_size": int(cfg.get("mini_batch_size", 1024)),
        # ceil(fraction × L) recovers suffix_len exactly
        "updated_fraction": suffix / layers,
        "qk_norm": bool(cfg.get("qk_norm", True)),
        "post_norm": bool(cfg.get("post_norm", True)),
        "rope_theta": float(cfg.get("rope_theta", 10000.0)),
        "rms_norm_eps": float(cfg.get("rms_norm_eps", 1e-6)),
        "initializer_range": float(cfg.get("initializer_range", 0.02)),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "bos_token_id": int(cfg.get("bos_token_id", 1)),
        "eos_token_id": int(cfg.get("eos_token_id", 2)),
        "inner_lr": lr,
        "inner_grad_clip": clip if clip > 0 else None,
    }
    return E2EConfig(**{**values, **overrides})


def release_preset(size: str) -> dict[str, Any]:
    """The release's ``model`` config section of its size ``size`` (``RELEASE_SIZES``), in its own field names:
    Llama 3's vocabulary and special tokens, window 8K, b = 1K, θ 500K, the last quarter of the blocks updated."""
    if size not in RELEASE_SIZES:
        raise ReleaseFormatError(f"unknown release size {size!r}; choose one of {', '.join(RELEASE_SIZES)}")
    shape = E2E_PRESETS[size]
    return {
        "vocab_size": RELEASE_VOCAB_SIZE,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "hidden_size": shape["hidden_size"],
        "intermediate_size": shape["intermediate_size"],
        "num_hidden_layers": shape["num_hidden_layers"],
        "num_attention_heads": shape["num_attention_heads"],
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "seq_modeling_block": "SWA",
        "mini_batch_size": 1024,
        "sliding_window_size": 8192,
        "rope_theta": 500000.0,
        "prime": True,
        "suffix_len": shape["num_hidden_layers"] // 4,
        "qk_norm": True,
        "pre_norm": True,
        "post_norm": True,
    }


def from_release(tensors: Mapping[str, Tensor], config: E2EConfig) -> dict[str, Tensor]:
    """Our state dict (names of ``E2EForCausalLM.state_dict()``) from the release's pytree tensors.

    Args:
        tensors: release path → tensor (parameters or their gradients), stacked as the release stacks them.
        config: the model's config (``release_config``).

    Raises:
        ReleaseFormatError: a tensor is missing or has the wrong shape, or one is left over.
    """
    layers, first = config.num_hidden_layers, config.first_updated_layer
    left = set(tensors)
    out: dict[str, Tensor] = {}

    def take(path: str, stacked: int | None) -> Tensor:
        if path not in tensors:
            raise ReleaseFormatError(f"release checkpoint lacks {path}")
        left.discard(path)
        value = torch.as_tensor(tensors[path])
        if stacked is not None and (value.dim() == 0 or value.shape[0] != stacked):
            raise ReleaseFormatError(
                f"release tensor {path} has shape {tuple(value.shape)}; expected a leading axis of {stacked} "
                "(one entry per block): does the config match the checkpoint?"
            )
        return value

    for path, (name, transposed) in GLOBAL_TENSORS.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        value = take(path, None)
        out[name] = value.T.contiguous() if transposed else value
    if config.tie_word_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    for path, (name, transposed) in BLOCK_TENSORS.items():
        if not config.qk_norm and name.startswith(("attn.q_norm", "attn.k_norm")):
            continue
        if not config.post_norm and "post_norm" in name:
            continue
        stacked = take(BLOCKS + path, layers)
        for i in range(layers):
            out[f"model.layers.{i}.{name}"] = stacked[i].T.contiguous() if transposed else stacked[i].clone()
    for path, name in PRIME_TENSORS.items():
        if not config.post_norm and "post_norm" in name:
            continue
        stacked = take(PRIME + path, layers - first)
        for j in range(layers - first):
            out[f"model.layers.{first + j}.prime.{name}"] = stacked[j].clone()
    # the step counter and other non-array leaves are not parameters
    leftover = sorted(p for p in left if not p.startswith("step_index"))
    if leftover:
        raise ReleaseFormatError(f"release tensors with no place in this model: {', '.join(leftover[:5])}")
    return out
