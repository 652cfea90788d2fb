"""The registry's ``short_conv`` knob: a causal conv sub-block before every mixer (Zoology's recipe)."""

from __future__ import annotations

import pytest
import torch

from tttlm.models.provenance import layer_pattern
from tttlm.models.registry import arch_of, build, load, make_config

CONV_ARCHS = ["ttt-linear", "ttt-mlp", "transformer", "swa", "hybrid", "gated-deltanet", "ttt-kvb", "ttt-e2e"]


@pytest.mark.parametrize("arch", CONV_ARCHS)
def test_short_conv_adds_one_conv_sub_block_per_block(arch: str) -> None:
    # with a short conv the transformer is a stack model: compare it with the stack's full attention
    plain = (
        build("hybrid", "tiny", match_params=False, full_attention_every=1)
        if arch == "transformer"
        else build(arch, "tiny", match_params=False)
    )
    conv = build(arch, "tiny", match_params=False, short_conv=True)
    added = {n for n, _ in conv.named_parameters()} - {n for n, _ in plain.named_parameters()}
    layers = conv.config.num_hidden_layers
    expected = {
        f"model.layers.{i}.{p}" for i in range(layers) for p in ("conv.weight", "conv.bias", "conv_norm.weight")
    }
    assert added == expected
    assert arch_of(conv) == arch


@pytest.mark.parametrize("arch", ["transformer", "swa", "gated-deltanet", "ttt-linear", "ttt-e2e"])
def test_short_conv_mixes_only_the_past_and_its_cache_continues_the_sequence(arch: str) -> None:
    torch.manual_seed(0)
    model = build(arch, "tiny", match_params=False, short_conv=True).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 48))
    with torch.no_grad():
        full = model(ids).logits
        changed = ids.clone()
        changed[:, 30] = (changed[:, 30] + 1) % model.config.vocab_size
        assert torch.equal(model(changed).logits[:, :30], full[:, :30])
        first = model(ids[:, :21], use_cache=True)
        rest = model(ids[:, 21:], past_key_values=first.past_key_values, use_cache=True).logits
    torch.testing.assert_close(torch.cat([first.logits, rest], 1), full, atol=1e-5, rtol=1e-5)


def test_transformer_with_short_conv_saves_and_reloads(tmp_path: object) -> None:
    model = build("transformer", "tiny", short_conv=True).eval()
    model.save_pretrained(tmp_path)
    again = load(tmp_path).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)
    assert arch_of(again) == "transformer"


@pytest.mark.parametrize(
    ("arch", "value", "needle"),
    [
        ("mamba", False, "cannot remove it"),
        ("mamba2", False, "cannot remove it"),
        ("swa", "yes", "short_conv must be True or False"),
        ("ttt-e2e", "yes", "short_conv must be True or False"),
    ],
)
def test_short_conv_refusals(arch: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        make_config(arch, "tiny", short_conv=value)


def test_the_mamba_mixers_take_short_conv_as_they_are() -> None:
    for arch in ("mamba", "mamba2"):
        assert make_config(arch, "tiny", short_conv=True).to_dict() == make_config(arch, "tiny").to_dict()


def test_ttt_e2e_takes_short_conv_as_an_option_off_by_default() -> None:
    # an E2EConfig field (the release has no conv), shown in the layer pattern as the other archs' conv is
    default, conv = make_config("ttt-e2e", "tiny"), make_config("ttt-e2e", "tiny", short_conv=True, conv_kernel=3)
    assert not default.short_conv
    assert (conv.short_conv, conv.conv_kernel) == (True, 3)
    assert (layer_pattern(default), layer_pattern(conv)) == ("SE", "(CS)(CE)")
    assert layer_pattern(make_config("swa", "tiny", short_conv=True)) == "(CS)(CS)"
