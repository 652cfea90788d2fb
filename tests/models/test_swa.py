"""Blocked sliding-window / full attention: equals a dense masked reference, never builds a (T × T) mask, keeps a
bounded KV window, and the swa/hybrid models equal transformers' Ministral with the same weights."""

from __future__ import annotations

import pytest
import torch
from baseline_testing import make, random_ids, rel_err
from transformers import MinistralConfig, MinistralForCausalLM

import tttlm.layers.attention as attention_module
from tttlm.layers.attention import Attention, causal_attention, dense_attention_reference

TOL64 = 1e-12  # same maths in float64, different summation order


def _qkv(num_q: int, num_k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, num_q, 3, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, num_k, 3, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, num_k, 3, 8, generator=g, dtype=torch.float64)
    return q, k, v


@pytest.mark.parametrize("window", [1, 3, 8, None])
@pytest.mark.parametrize("block_size", [None, 1, 4])
def test_blocked_attention_equals_the_dense_reference(window: int | None, block_size: int | None) -> None:
    for past, num_q in [(0, 1), (0, 7), (0, 20), (5, 1), (5, 9), (13, 20)]:
        q, k, v = _qkv(num_q, past + num_q, seed=past + num_q)
        out = causal_attention(q, k, v, window=window, block_size=block_size)
        expected = dense_attention_reference(q, k, v, window=window)
        assert out.shape == expected.shape
        assert rel_err(out, expected) < TOL64, (past, num_q)


def test_window_changes_the_output_and_a_long_window_is_full_attention() -> None:
    q, k, v = _qkv(20, 20)
    full = dense_attention_reference(q, k, v)
    assert rel_err(causal_attention(q, k, v, window=20, block_size=4), full) < TOL64
    assert rel_err(causal_attention(q, k, v, window=19, block_size=4), full) > 1e-3
    # a window of one key: the output is the token's own value
    assert rel_err(causal_attention(q, k, v, window=1, block_size=4), v) < TOL64


def test_blocked_attention_gradients_equal_the_reference() -> None:
    q, k, v = (t.requires_grad_() for t in _qkv(9, 14))
    weights = torch.randn(2, 9, 3, 8, dtype=torch.float64)
    grads = torch.autograd.grad((causal_attention(q, k, v, window=4, block_size=3) * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((dense_attention_reference(q, k, v, window=4) * weights).sum(), (q, k, v))
    for grad, ref in zip(grads, expected, strict=True):
        assert rel_err(grad, ref) < TOL64


@pytest.mark.parametrize(("window", "past"), [(16, 0), (16, 40), (None, 40)])
def test_no_call_sees_more_than_a_block_of_queries_and_its_keys(
    window: int | None, past: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long input is split into query blocks: every SDPA call gets at most block × (block + window) scores."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
        mask = kwargs.get("attn_mask")
        calls.append((q.shape[2], k.shape[2], None if mask is None else tuple(mask.shape)))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    num_q, block = 600, 32
    q, k, v = (t.float() for t in _qkv(num_q, past + num_q))
    causal_attention(q, k, v, window=window, block_size=block)
    assert len(calls) == -(-num_q // block)
    # sliding window: a block's own keys and the window before it; full attention: the whole prefix (the mask
    # is then block × T, never T × T)
    max_keys = block + window - 1 if window else past + num_q
    for rows, keys, mask in calls:
        assert rows <= block
        assert keys <= max_keys
        assert mask is None or mask == (rows, keys)


def test_attention_layer_streams_with_a_bounded_cache() -> None:
    torch.manual_seed(0)
    layer = Attention(32, 4, window=6, block_size=4).double()
    x = torch.randn(2, 23, 32, dtype=torch.float64)
    with torch.no_grad():
        full, _ = layer(x)
        cache, pieces, start = None, [], 0
        for n in [9, 1, 1, 7, 5]:
            y, cache = layer(x[:, start : start + n], cache)
            pieces.append(y)
            start += n
            assert cache.keys.shape[1] == min(start, 5)  # the last window − 1 tokens
            assert cache.position == start
            # a copy, not a view of the whole chunk's keys (which would keep them alive)
            assert cache.keys.untyped_storage().nbytes() == cache.keys.numel() * cache.keys.element_size()
    assert rel_err(torch.cat(pieces, dim=1), full) < TOL64


def test_bad_windows_are_refused() -> None:
    q, k, v = _qkv(3, 3)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="window must be None"):
            causal_attention(q, k, v, window=bad)
    with pytest.raises(ValueError, match="at least as many keys"):
        causal_attention(q, k[:, :2], v[:, :2])


def _ministral_twin(model: torch.nn.Module, attn_implementation: str) -> MinistralForCausalLM:
    """transformers' Ministral (Mistral with per-layer sliding/full attention) holding our model's weights."""
    config = model.config
    twin_config = MinistralConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        sliding_window=config.sliding_window,
        layer_types=[mixers[0] for mixers in config.layer_mixers],
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=True,
        attn_implementation=attn_implementation,
    )
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn": "self_attn"}
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        state[".".join(names.get(p, p) for p in parts)] = value
    twin = MinistralForCausalLM(twin_config).to(torch.float64).eval()
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected
    assert set(missing) <= {"lm_head.weight"}  # tied to the embedding
    return twin


# the Llama/Mistral block (our option; the default is the TTT-E2E release's block)
LLAMA_BLOCK = {"qk_norm": False, "post_norm": False, "rope_pairing": "half", "rope_theta": 10000.0}


@pytest.mark.parametrize("arch", ["swa", "hybrid"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_swa_and_hybrid_equal_transformers_ministral(arch: str, attn_implementation: str) -> None:
    if arch == "hybrid":
        model = make(arch, num_hidden_layers=4, full_attention_every=2, **LLAMA_BLOCK)
    else:
        model = make(arch, **LLAMA_BLOCK)
    twin = _ministral_twin(model, attn_implementation)
    ids = random_ids(2, 23)  # > 4 windows of 5
    with torch.no_grad():
        ours, theirs = model(ids).logits, twin(ids).logits
    # Ministral rounds to float32 inside its RMSNorm and RoPE tables even in a float64 model (~1e-7 relative per
    # op); measured 1e-7 on the logits. A wrong window or mask is off by > 1e-2.
    assert rel_err(ours, theirs) < 1e-5


def test_hybrid_puts_full_attention_in_every_nth_layer() -> None:
    model = make("hybrid", num_hidden_layers=6, full_attention_every=3)
    assert model.config.layer_mixers == [["sliding_attention"], ["sliding_attention"], ["full_attention"]] * 2
    windows = [block.attn.window for block in model.model.layers]
    assert windows == [5, 5, None, 5, 5, None]
    with pytest.raises(ValueError, match="full_attention_every"):
        make("hybrid", full_attention_every=0)


@pytest.mark.parametrize("arch", ["swa", "hybrid"])
def test_swa_and_hybrid_default_to_the_e2e_release_block(arch: str) -> None:
    model = make(arch)
    config = model.config
    assert (config.qk_norm, config.post_norm, config.rope_pairing, config.rope_theta) == (
        True,
        True,
        "interleaved",
        500000.0,
    )
    block = model.model.layers[0]
    assert block.attn.q_norm is not None
    assert block.attn.k_norm is not None
    assert {"attn_post_norm", "ffn_post_norm"} <= {name for name, _ in block.named_children()}
    # the post-norms act: removing one changes the output
    ids = random_ids(2, 11)
    with torch.no_grad():
        before = model(ids).logits
        block.ffn_post_norm.weight.mul_(2.0)
        after = model(ids).logits
    assert not torch.allclose(before, after)
