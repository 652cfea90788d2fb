"""Loading reference (ttt-lm-pytorch) checkpoints: every weight maps, logits are unchanged, bad input is refused.

The reference checkpoints are produced here from our own random models by the inverse of the documented key
mapping (no reference code runs in the tests), so what is checked is that every reference key lands on the
parameter that plays its role, with the reference's shapes. The numerics conventions the converter relies on are
pinned elsewhere (the ½ loss and scales in tests/ops) or below (RoPE pairing).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import PretrainedConfig

from tttlm.layers.rope import apply_rope, rope_angles
from tttlm.models import TTTConfig, TTTForCausalLM
from tttlm.models.ttt.convert import convert_reference_config, load_reference


def to_reference(model: TTTForCausalLM) -> tuple[dict, dict[str, torch.Tensor]]:
    """The reference's config dict and state dict for one of our models (inverse of the converter's mapping)."""
    c = model.config
    config = {
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_word_embeddings,
        "rope_theta": c.rope_theta,
        "use_gate": c.use_gate,
        "share_qk": c.backbone == "mamba",
        "ttt_layer_type": c.layer_type,
        "ttt_base_lr": model.model.layers[0].ttt.base_lr,
        "mini_batch_size": c.mini_batch_size,
        "pre_conv": c.pre_conv,
        "conv_kernel": c.conv_kernel,
        "pretraining_tp": 1,
        "scan_checkpoint_group_size": 0,
        "model_type": "ttt",
        "architectures": ["TTTForCausalLM"],
    }
    renames = {
        "conv_norm.weight": "conv.norm.weight",
        "conv.weight": "conv.conv.weight",
        "conv.bias": "conv.conv.bias",
        "ttt.qk_proj.weight": "seq_modeling_block.q_proj.weight",
        "ttt.lr_weight": "seq_modeling_block.learnable_ttt_lr_weight",
        "ttt.lr_bias": "seq_modeling_block.learnable_ttt_lr_bias",
        "ttt.token_offset": "seq_modeling_block.learnable_token_idx",
    }
    unsqueeze = {"conv.conv.weight", "learnable_ttt_lr_weight", "learnable_ttt_lr_bias", "b1", "b2"}
    unsqueeze |= {"conv_q.weight", "conv_k.weight"}
    state = {}
    for key, tensor in model.state_dict().items():
        parts = key.split(".", 3)
        if parts[:2] != ["model", "layers"]:
            if not (key == "lm_head.weight" and c.tie_word_embeddings):
                state[key] = tensor.clone()
            continue
        prefix, rest = ".".join(parts[:3]), parts[3]
        ref = renames.get(rest, rest.replace("ttt.", "seq_modeling_block.", 1))
        leaf = ref.removeprefix("seq_modeling_block.")
        state[f"{prefix}.{ref}"] = tensor.unsqueeze(1).clone() if leaf in unsqueeze or ref in unsqueeze else tensor
    return config, state


def save_reference(tmp_path: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    return tmp_path


@pytest.mark.parametrize("layer_type", ["linear", "mlp"])
@pytest.mark.parametrize(("backbone", "use_gate", "tied"), [("transformer", False, True), ("mamba", True, False)])
def test_reference_checkpoint_gives_the_same_logits(tmp_path, layer_type, backbone, use_gate, tied) -> None:
    torch.manual_seed(0)
    config = TTTConfig.from_preset(
        "tiny", layer_type=layer_type, backbone=backbone, use_gate=use_gate, tie_word_embeddings=tied, mini_batch_size=4
    )
    ours = TTTForCausalLM(config).eval()
    with torch.no_grad():  # non-default values everywhere, so a swapped or dropped tensor changes the logits
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref_config, ref_state = to_reference(ours)
    loaded = load_reference(save_reference(tmp_path, ref_config, ref_state))
    assert loaded.config.backbone == backbone
    assert loaded.config.pre_conv == (backbone == "mamba")
    ids = torch.randint(config.vocab_size, (2, 11))  # 11: not a multiple of the mini-batch
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, ours(ids).logits, rtol=0, atol=0)


def test_rope_pairs_match_the_reference_permutation() -> None:
    """The reference permutes (x0, x1, x2, x3, …) into halves (x0, x2, …, x1, x3, …), applies rotate-half RoPE
    with angles repeated over both halves, and undoes the permutation: that is our interleaved-pair RoPE."""
    torch.manual_seed(0)
    seq, heads, dim = 6, 2, 8
    x = torch.randn(1, seq, heads, dim, dtype=torch.float64)
    cos, sin = rope_angles(torch.arange(seq), dim, 10000.0)
    halves = x.unflatten(-1, (dim // 2, 2)).transpose(-1, -2).flatten(-2)
    first, second = halves[..., : dim // 2], halves[..., dim // 2 :]
    c, s = cos[:, None, :], sin[:, None, :]
    rotated = torch.cat([first * c - second * s, second * c + first * s], dim=-1)
    undone = rotated.unflatten(-1, (2, dim // 2)).transpose(-1, -2).flatten(-2)
    torch.testing.assert_close(apply_rope(x, cos, sin), undone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"ttt_layer_type": "linear_dual"}, "ttt_layer_type"),
        ({"some_new_option": 1}, "some_new_option"),
    ],
)
def test_unsupported_reference_options_are_named(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        convert_reference_config({"hidden_size": 64, "num_attention_heads": 4, **change})


def test_reference_defaults_fill_missing_keys() -> None:
    config = convert_reference_config({"hidden_size": 64, "num_attention_heads": 4, "share_qk": True})
    assert (config.layer_type, config.backbone, config.use_gate, config.pre_conv) == ("linear", "mamba", False, False)
    assert config.ttt_base_lr == 1.0
    assert config.mini_batch_size == 16


@pytest.fixture
def reference_dir(tmp_path) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config, state = to_reference(TTTForCausalLM(TTTConfig.from_preset("tiny", mini_batch_size=4)))
    return tmp_path, config, state


def test_extra_reference_weight_is_named(reference_dir) -> None:
    path, config, state = reference_dir
    state["model.layers.0.seq_modeling_block.something_new"] = torch.zeros(3)
    with pytest.raises(ValueError, match="something_new"):
        load_reference(save_reference(path, config, state))


def test_missing_reference_weight_is_named(reference_dir) -> None:
    path, config, state = reference_dir
    del state["model.layers.1.seq_modeling_block.W1"]
    with pytest.raises(ValueError, match=r"model\.layers\.1\.ttt\.W1"):
        load_reference(save_reference(path, config, state))


def test_wrong_shape_is_named(reference_dir) -> None:
    path, config, state = reference_dir
    config["intermediate_size"] = 100
    with pytest.raises(ValueError, match=r"mlp\.(gate|up|down)_proj\.weight.*expected"):
        load_reference(save_reference(path, config, state))


def test_pickled_weights_are_refused(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin.*safetensors"):
        load_reference(tmp_path)


def test_convert_command_writes_a_loadable_model(reference_dir, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM

    from tttlm.cli import main

    path, config, state = reference_dir
    source = path / "ref"
    source.mkdir()
    save_reference(source, config, state)
    old_umask = os.umask(0o022)
    try:
        assert main(["convert", str(source), str(path / "ours")]) == 0
    finally:
        os.umask(old_umask)
    assert "converted" in capsys.readouterr().out
    # readable by others, as a plain open() makes it (safetensors alone writes 0600)
    assert stat.S_IMODE((path / "ours" / "model.safetensors").stat().st_mode) == 0o644
    assert (path / "ours" / "tttlm_auto.py").exists()  # loads without import tttlm (models/remote_code.py)
    model = AutoModelForCausalLM.from_pretrained(path / "ours")
    ids = torch.randint(model.config.vocab_size, (1, 9))
    torch.testing.assert_close(model(ids).logits, load_reference(source)(ids).logits, rtol=0, atol=0)


def test_convert_command_reports_errors(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from tttlm.cli import main

    assert main(["convert", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "neither a ttt-lm-pytorch checkpoint (config.json + model*.safetensors)" in capsys.readouterr().err


class _ReferenceConfig(PretrainedConfig):
    """Stands in for ttt-lm-pytorch's ``TTTConfig`` (a ``PretrainedConfig`` of model type "ttt"), so that its
    config.json is written by ``save_pretrained`` itself, with every bookkeeping key this transformers writes."""

    model_type = "ttt"


def test_a_checkpoint_saved_by_save_pretrained_converts(tmp_path) -> None:
    torch.manual_seed(0)
    ours = TTTForCausalLM(TTTConfig.from_preset("tiny", mini_batch_size=4)).eval()
    ref_config, ref_state = to_reference(ours)
    source = tmp_path / "ref"
    _ReferenceConfig(**ref_config).save_pretrained(source)
    written = json.loads((source / "config.json").read_text())
    assert "transformers_version" in written  # what the old hand-made fixtures lacked
    # transformers 4.x, which the reference was trained with, also wrote torch_dtype (5.x writes dtype)
    (source / "config.json").write_text(json.dumps({**written, "torch_dtype": "float32"}))
    save_file({k: v.contiguous() for k, v in ref_state.items()}, source / "model.safetensors")
    # files of a real checkpoint directory that convert does not need
    (source / "README.md").write_text("# a reference checkpoint\n")
    (source / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    (source / "tokenizer.json").write_text("{}")
    save_file({"exp_avg": torch.zeros(3)}, source / "optimizer.safetensors")
    loaded = load_reference(source)
    ids = torch.randint(ours.config.vocab_size, (1, 9))
    torch.testing.assert_close(loaded(ids).logits, ours(ids).logits, rtol=0, atol=0)


def test_an_untranslatable_key_is_named(tmp_path) -> None:
    ours = TTTForCausalLM(TTTConfig.from_preset("tiny", mini_batch_size=4)).eval()
    ref_config, ref_state = to_reference(ours)
    _ReferenceConfig(**ref_config, ttt_scan_kind="parallel").save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in ref_state.items()}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="ttt_scan_kind"):
        load_reference(tmp_path)
