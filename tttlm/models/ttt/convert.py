"""Load checkpoints of the public reference PyTorch implementation (ttt-lm-pytorch's ``TTTForCausalLM``).

Only weights and configuration values are translated; the numerics they feed are already the reference's:
inner loss ``½‖·‖²`` (its LayerNorm-L2 backward returns ``y − target``), LayerNorm epsilon 1e-6 for the inner
and output norms, tanh-GELU gate and TTT-MLP activation, ``lr = base_lr · sigmoid(x θ_lr + b) / d``, step scale
``max(1/i + δ_i, 0)``, and RoPE on interleaved pairs (it permutes q/k into halves, applies rotate-half RoPE and
permutes back, which is interleaved-pair RoPE) with positions modulo the mini-batch.

Reference layout → ours, per block ``model.layers.N.``:

    seq_norm, ffn_norm, mlp.{gate,up,down}_proj           same names
    conv.norm / conv.conv (Conv1d (C, 1, K))              conv_norm / conv (C, K)            (pre_conv)
    seq_modeling_block.q_proj (shared q/k when share_qk)  ttt.q_proj, or ttt.qk_proj
    seq_modeling_block.{k,v,o,g}_proj                     ttt.{k,v,o,g}_proj
    seq_modeling_block.conv_{q,k} (Conv1d (C, 1, K))      ttt.conv_{q,k} (C, K)
    learnable_ttt_lr_weight (H, 1, C) / _bias (H, 1)      ttt.lr_weight (H, C) / ttt.lr_bias (H,)
    learnable_token_idx (b,)                              ttt.token_offset (b,)
    W1, W2 / b1, b2 (H, 1, n)                             ttt.W1, ttt.W2 / ttt.b1, ttt.b2 (H, n)
    ttt_norm_{weight,bias}, post_norm                     ttt.ttt_norm_{weight,bias}, ttt.post_norm
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor
from transformers import PretrainedConfig

from tttlm.models.checkpoint_files import safetensors_files
from tttlm.models.ttt.configuration import TTTConfig
from tttlm.models.ttt.modeling import TTTForCausalLM

# The reference TTTConfig's defaults, for keys a saved config.json leaves out.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5504,
    "num_hidden_layers": 24,
    "num_attention_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "pad_token_id": None,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
    "use_gate": False,
    "share_qk": False,
    "ttt_layer_type": "linear",
    "ttt_base_lr": 1.0,
    "mini_batch_size": 16,
    "pre_conv": False,
    "conv_kernel": 4,
}
# Keys that change only speed or memory in the reference (same maths), and the bookkeeping that ``save_pretrained``
# writes in one transformers release or another (4.x: torch_dtype; 5.x: dtype; a remote-code model: auto_map).
_IGNORED_KEYS = {
    "pretraining_tp", "scan_checkpoint_group_size", "use_cache", "architectures", "model_type", "torch_dtype",
    "dtype", "transformers_version", "auto_map", "_name_or_path", "_commit_hash", "_attn_implementation",
}  # fmt: skip
_SAME_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "max_position_embeddings", "initializer_range", "rms_norm_eps", "pad_token_id", "bos_token_id",
    "eos_token_id", "tie_word_embeddings", "rope_theta", "use_gate", "mini_batch_size", "pre_conv", "conv_kernel",
    "ttt_base_lr",
)  # fmt: skip


def convert_reference_config(reference: Mapping[str, Any]) -> TTTConfig:
    """Our ``TTTConfig`` for a reference config dict (its config.json). Unsupported options raise ValueError."""
    generic = set(PretrainedConfig().to_dict())
    unknown = sorted(set(reference) - set(REFERENCE_DEFAULTS) - _IGNORED_KEYS - generic - {"rope_scaling"})
    if unknown:
        raise ValueError(f"reference config keys {unknown} have no counterpart in tttlm; cannot convert")
    values = {**REFERENCE_DEFAULTS, **reference}
    if values["hidden_act"] != "silu":
        raise ValueError(f"reference hidden_act={values['hidden_act']!r} has no counterpart: tttlm's MLP is SwiGLU")
    if values.get("rope_scaling") is not None:
        raise ValueError(f"reference rope_scaling={values['rope_scaling']!r} has no counterpart in tttlm")
    if values["ttt_layer_type"] not in ("linear", "mlp"):
        raise ValueError(f"reference ttt_layer_type={values['ttt_layer_type']!r}: only 'linear' and 'mlp' exist")
    return TTTConfig(
        **{key: values[key] for key in _SAME_KEYS},
        layer_type=values["ttt_layer_type"],
        backbone="mamba" if values["share_qk"] else "transformer",
    )


def _layer_key(rest: str, share_qk: bool) -> tuple[str, bool]:
    """(our key suffix, squeeze a Conv1d (C, 1, K) or (H, 1, n) middle dim?) for a per-layer reference key."""
    direct = {
        "seq_norm.weight": "seq_norm.weight",
        "ffn_norm.weight": "ffn_norm.weight",
        "conv.norm.weight": "conv_norm.weight",
        "conv.conv.bias": "conv.bias",
    }
    if rest in direct:
        return direct[rest], False
    if rest == "conv.conv.weight":
        return "conv.weight", True
    if rest.startswith("mlp."):
        return rest, False
    block = "seq_modeling_block."
    if not rest.startswith(block):
        raise KeyError(rest)
    name = rest[len(block) :]
    renamed = {
        "learnable_ttt_lr_weight": ("lr_weight", True),
        "learnable_ttt_lr_bias": ("lr_bias", True),
        "learnable_token_idx": ("token_offset", False),
        "b1": ("b1", True),
        "b2": ("b2", True),
        "conv_q.weight": ("conv_q.weight", True),
        "conv_k.weight": ("conv_k.weight", True),
    }
    if name in renamed:
        ours, squeeze = renamed[name]
        return f"ttt.{ours}", squeeze
    if name == "q_proj.weight" and share_qk:
        return "ttt.qk_proj.weight", False
    return f"ttt.{name}", False


def convert_reference_state_dict(
    state_dict: Mapping[str, Tensor], config: TTTConfig, our_keys: Collection[str]
) -> dict[str, Tensor]:
    """Rename and reshape a reference state dict into ours (``our_keys``: the target model's state-dict keys).

    A reference key with no counterpart among ``our_keys`` raises ValueError naming it.
    """
    share_qk = config.backbone == "mamba"
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
        if match is None:
            if key in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
                out[key] = tensor
                continue
            raise ValueError(f"reference weight {key!r} has no counterpart in tttlm; cannot convert")
        try:
            ours, squeeze = _layer_key(match.group(2), share_qk)
        except KeyError:
            ours, squeeze = "", False
        target = f"model.layers.{match.group(1)}.{ours}"
        if target not in our_keys:
            raise ValueError(f"reference weight {key!r} has no counterpart in tttlm; cannot convert")
        out[target] = tensor.squeeze(1) if squeeze else tensor
    return out


def load_reference(path: str | Path) -> TTTForCausalLM:
    """Our model from a reference checkpoint directory (config.json + *.safetensors), in float32.

    Weights must be safetensors: pickled ``.bin`` checkpoints are refused (unpickling runs arbitrary code);
    convert them once, in an environment you trust, with ``safetensors.torch.save_file``.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: pass the directory the reference model was saved to")
    weight_files = safetensors_files(path)
    if not weight_files:
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        hint = f" (found pickled {pickled}: re-save them as safetensors)" if pickled else ""
        raise FileNotFoundError(f"no model*.safetensors weights in {path}{hint}")
    config = convert_reference_config(json.loads(config_file.read_text()))
    state: dict[str, Tensor] = {}
    for file in weight_files:
        state.update(load_file(file))
    model = TTTForCausalLM(config)
    expected = set(model.state_dict())
    converted = convert_reference_state_dict(state, config, expected)
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
        converted.pop("lm_head.weight", None)
    missing = sorted(expected - set(converted))
    if missing:
        raise ValueError(f"reference checkpoint lacks weights for {missing[:8]}{' …' if len(missing) > 8 else ''}")
    for key, tensor in converted.items():
        target = model.state_dict()[key]
        if tuple(tensor.shape) != tuple(target.shape):
            raise ValueError(
                f"reference weight for {key!r} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)} "
                "for the config in config.json"
            )
    model.load_state_dict(converted, strict=not config.tie_word_embeddings)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.float().eval()
