"""The first paper's ablation switches of the TTT layer (``inner_norm``, ``learn_init``, ``learn_lr``): each
builds what it says, trains what it should, survives save/load, and all three off with b = T is causal linear
attention (paper §2.6: TTT-Linear with batch GD, W0 = 0 and no inner LayerNorm)."""

from __future__ import annotations

import pytest
import torch
from model_testing import make_model, random_ids

from tttlm.layers import TTTMLP, TTTLinear
from tttlm.layers.rope import apply_rope, rope_angles
from tttlm.models import TTTConfig, TTTForCausalLM


def test_all_switches_off_with_one_mini_batch_is_causal_linear_attention() -> None:
    torch.manual_seed(0)
    seq, heads, d = 12, 2, 8
    layer = TTTLinear(
        heads * d, heads, mini_batch_size=seq, use_gate=False, inner_norm=False, learn_init=False, learn_lr=False,
        initializer_range=0.3,
    ).double()  # fmt: skip
    x = torch.randn(2, seq, heads * d, dtype=torch.float64)
    y, _ = layer(x)

    q, k, v = (p(x).unflatten(-1, (heads, d)) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
    cos, sin = rope_angles(torch.arange(seq), d, layer.rope_theta)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    lr = layer.base_lr * 0.5 / d
    # W0 = 0, b0 = 0: every gradient of ½‖k W + b − v‖² is taken at zero, −(kᵀv, v); the mini-batch update of
    # token t averages the t gradients so far: W_t = lr / t · Σ_{s≤t} k_sᵀ v_s, and likewise the bias.
    scores = torch.einsum("bthd,bshd->bhts", q, k) + 1.0
    weights = scores.tril() * lr / torch.arange(1, seq + 1, dtype=x.dtype)[:, None]
    z = torch.einsum("bhts,bshd->bthd", weights, v).flatten(-2)
    expected = layer.o_proj(layer.post_norm(z))
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer_cls", [TTTLinear, TTTMLP])
def test_switches_build_what_they_say(layer_cls: type) -> None:
    full = dict(layer_cls(32, 2).named_parameters())
    assert {"W1", "b1", "lr_weight", "lr_bias", "ttt_norm_weight", "ttt_norm_bias"} <= set(full)
    plain = layer_cls(32, 2, inner_norm=False, learn_init=False, learn_lr=False)
    names = {n for n, _ in plain.named_parameters()}
    assert not names & {"W1", "b1", "W2", "b2", "lr_weight", "lr_bias", "ttt_norm_weight", "ttt_norm_bias"}
    buffers = dict(plain.named_buffers())
    assert set(buffers) == ({"W1", "b1"} if layer_cls is TTTLinear else {"W1", "b1", "W2", "b2"})
    if layer_cls is TTTLinear:
        assert not buffers["W1"].any()  # the paper's fixed W0 = 0
    else:
        assert buffers["W1"].std() > 0  # zeros would stop the inner MLP's gradients
    assert not buffers["b1"].any()


def test_fixed_initial_weights_are_not_trained_but_are_saved(tmp_path) -> None:
    model = make_model(torch.float32, ttt_learn_init=False, ttt_learn_lr=False, ttt_inner_norm=False)
    ids = random_ids(2, 13)
    model.train()
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    ttt = model.model.layers[0].ttt
    assert not ttt.W1.requires_grad
    model.save_pretrained(tmp_path)
    loaded = TTTForCausalLM.from_pretrained(tmp_path).eval()
    assert (loaded.config.ttt_learn_init, loaded.config.ttt_learn_lr, loaded.config.ttt_inner_norm) == (False,) * 3
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_each_switch_changes_the_model() -> None:
    ids = random_ids(1, 17)
    with torch.no_grad():
        base = make_model().eval()(ids).logits
        for switch in ("ttt_inner_norm", "ttt_learn_init", "ttt_learn_lr"):
            assert not torch.allclose(make_model(**{switch: False})(ids).logits, base), switch


@pytest.mark.parametrize("name", ["ttt_inner_norm", "ttt_learn_init", "ttt_learn_lr"])
def test_switches_must_be_bools(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be True or False"):
        TTTConfig.from_preset("tiny", **{name: 1})
