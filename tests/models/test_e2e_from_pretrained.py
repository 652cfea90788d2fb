"""``tttlm e2e-init``: tiny random Llama, Mistral, Qwen2 and Qwen3 models built by transformers itself (GQA,
QK-norm, biases, a scaled RoPE, tied and untied heads) become TTT-E2E models that equal their source with the inner
lr at 0 on inputs shorter than the window, and that learn at test time otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from tttlm.cli import main
from tttlm.models.e2e.from_pretrained import SourceModelError, e2e_from_pretrained

TOL = 1e-5  # float32, same maths in another order (measured <= 3e-7); a wrong RoPE base or scaling gives 2e-4+
COMMON = {
    "vocab_size": 97,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention
    "max_position_embeddings": 256,
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 50000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
SOURCES = {
    "llama": ("LlamaConfig", {"rope_parameters": LLAMA3_ROPE, "tie_word_embeddings": False}),
    "llama-bias": ("LlamaConfig", {"attention_bias": True, "tie_word_embeddings": True}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 16, "tie_word_embeddings": False}),  # QK-norm, head dim ≠ hidden / heads
}
AVAILABLE = {name: spec for name, spec in SOURCES.items() if hasattr(transformers, spec[0])}


def _source(tmp_path: Path, name: str) -> Path:
    config_class, extra = AVAILABLE[name]
    config = getattr(transformers, config_class)(**COMMON, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():  # biases and norms away from their zero/one init, so that a dropped one is seen
        for param_name, param in model.named_parameters():
            if param_name.endswith(("bias", "norm.weight", "layernorm.weight")):
                param.add_(0.1 * torch.randn_like(param))
    path = tmp_path / name
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", sorted(AVAILABLE))
@pytest.mark.parametrize("prime_init", ["mlp", "zero"])
def test_with_inner_lr_zero_the_model_equals_its_source_within_the_window(
    tmp_path: Path, name: str, prime_init: str
) -> None:
    path = _source(tmp_path, name)
    source = AutoModelForCausalLM.from_pretrained(path).eval()
    model = e2e_from_pretrained(path, window=32, mini_batch_size=4, updated_fraction=0.5, prime_init=prime_init)
    model.set_inner_lr_scale(0.0)
    ids = torch.randint(COMMON["vocab_size"], (2, 32))
    with torch.no_grad():
        expected = source(ids).logits
        got = model.eval()(ids).logits
    assert float((got - expected).abs().max() / expected.abs().max()) < TOL
    # and with test-time training on, the later mini-batches change (the prime MLPs learn)
    model.set_inner_lr_scale(1.0)
    with torch.no_grad():
        learning = model(ids).logits
    assert float((learning[:, 8:] - expected[:, 8:]).abs().max()) > 1e-4
    assert float((learning[:, :4] - expected[:, :4]).abs().max() / expected.abs().max()) < TOL  # W_0 for b tokens


def test_the_cli_writes_a_loadable_model_and_refuses_what_it_cannot_convert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _source(tmp_path, "qwen3" if "qwen3" in AVAILABLE else sorted(AVAILABLE)[0])
    out = tmp_path / "e2e"
    assert main(["e2e-init", "--from", str(path), str(out), "--window", "16", "--mini-batch", "4"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "tttlm_e2e"
    assert (model.config.sliding_window, model.config.mini_batch_size, model.config.num_updated_layers) == (16, 4, 1)
    assert main(["e2e-init", "--from", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "config.json not found" in capsys.readouterr().err
    gpt2 = tmp_path / "gpt2"
    AutoModelForCausalLM.from_config(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2)).save_pretrained(gpt2)
    with pytest.raises(SourceModelError, match="Llama family"):
        e2e_from_pretrained(gpt2, window=16, mini_batch_size=4)
