"""``generate`` with the TTTCache: greedy = manual argmax loop, seeded sampling, O(1) decode steps, beam search."""

from __future__ import annotations

import model_testing
import pytest
import torch
from model_testing import VARIANT_IDS, VARIANTS, random_ids

from tttlm import TTTCache, TTTForCausalLM
from tttlm.layers.ttt import TTTLayer
from tttlm.models.hf_compat import cache_argument, output_cache

# pad_token_id given so generate does not warn about a missing one; no attention_mask needed (no padding)
GEN = {"pad_token_id": 0}


def make_model(dtype: torch.dtype, **overrides: object) -> TTTForCausalLM:
    """A tiny model without an end-of-sequence token, so that generation always runs max_new_tokens steps."""
    return model_testing.make_model(dtype, eos_token_id=None, **overrides)


@torch.no_grad()
def greedy_by_hand(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy continuation recomputing the whole sequence at every step (no cache)."""
    for _ in range(new_tokens):
        next_id = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


@pytest.mark.parametrize(("layer_type", "backbone"), VARIANTS, ids=VARIANT_IDS)
def test_greedy_generate_equals_a_manual_argmax_loop(layer_type: str, backbone: str) -> None:
    # float64 so that near-ties in the argmax cannot flip between the cached and uncached computations
    model = make_model(torch.float64, layer_type=layer_type, backbone=backbone)
    prompt = random_ids(2, 7)  # 7 = one full mini-batch of 4 and an open one
    out = model.generate(prompt, max_new_tokens=10, do_sample=False, **GEN)
    assert out.shape == (2, 17)
    assert torch.equal(out, greedy_by_hand(model, prompt, 10))


def test_greedy_generate_float32_with_attention_mask() -> None:
    model = make_model(torch.float32, mini_batch_size=16)
    prompt = random_ids(1, 5)
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False, **GEN)
    assert torch.equal(out, greedy_by_hand(model, prompt, 20))


def test_sampling_runs_and_is_reproducible_with_a_seed() -> None:
    model = make_model(torch.float32, backbone="mamba")
    prompt = random_ids(2, 6)
    kwargs = {"max_new_tokens": 12, "do_sample": True, "top_k": 50, "temperature": 0.9, **GEN}
    torch.manual_seed(123)
    first = model.generate(prompt, **kwargs)
    torch.manual_seed(123)
    second = model.generate(prompt, **kwargs)
    torch.manual_seed(7)
    other = model.generate(prompt, top_p=0.9, **kwargs)
    assert first.shape == (2, 18)
    assert torch.equal(first, second)
    assert torch.equal(first[:, :6], prompt)
    assert not torch.equal(first, other)
    assert int(first.min()) >= 0
    assert int(first.max()) < model.config.vocab_size


def test_decode_steps_are_single_tokens_and_the_state_does_not_grow() -> None:
    """After the prefill every TTT layer call gets one token (the O(1) step path), and the cache keeps its size."""
    model = make_model(torch.float32, backbone="mamba")
    seen = []
    hooks = [
        module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
        for module in model.modules()
        if isinstance(module, TTTLayer)
    ]
    model.generate(random_ids(1, 9), max_new_tokens=6, do_sample=False, **GEN)
    for hook in hooks:
        hook.remove()
    layers = model.config.num_hidden_layers
    assert seen[:layers] == [9] * layers  # prefill
    assert seen[layers:] == [1] * (5 * layers)  # 5 decode steps (the 6th token needs no forward)

    def cache_numel(prefill: int) -> int:
        with torch.no_grad():
            cache = output_cache(model(random_ids(1, prefill), use_cache=True))
            cache = output_cache(model(random_ids(1, 1), past_key_values=cache))
        tensors = [t for block in cache.blocks for t in (*block.ttt.state.weights, *block.ttt.state.grad_sums)]
        tensors += [t for block in cache.blocks for t in (block.ttt.conv_q, block.ttt.conv_k, block.pre_conv)]
        return sum(t.numel() for t in tensors)

    assert cache_numel(3) == cache_numel(200)


def test_generate_continues_a_user_cache() -> None:
    """A prompt partly consumed into a TTTCache continues exactly like generating from the whole prompt."""
    model = make_model(torch.float64)
    prompt = random_ids(1, 11)
    expected = model.generate(prompt, max_new_tokens=8, do_sample=False, **GEN)
    with torch.no_grad():
        cache = output_cache(model(prompt[:, :9], use_cache=True))
    out = model.generate(prompt, **cache_argument(cache), max_new_tokens=8, do_sample=False, **GEN)
    assert torch.equal(out, expected)
    assert isinstance(cache, TTTCache)
    assert cache.get_seq_length() == 11 + 8 - 1


def test_generate_returns_the_cache_and_beam_search_runs() -> None:
    model = make_model(torch.float64, layer_type="mlp")
    prompt = random_ids(2, 5)
    out = model.generate(prompt, max_new_tokens=4, return_dict_in_generate=True, output_logits=True, **GEN)
    assert isinstance(output_cache(out), TTTCache)
    assert len(out.logits) == 4
    beams = model.generate(prompt, max_new_tokens=4, num_beams=3, do_sample=False, **GEN)
    # beam search reorders the cache rows (TTTCache.reorder_cache); recomputing without a cache must agree
    assert torch.equal(beams, model.generate(prompt, max_new_tokens=4, num_beams=3, use_cache=False, **GEN))
    assert beams.shape == (2, 9)
    several = model.generate(prompt, max_new_tokens=4, do_sample=True, num_return_sequences=2, **GEN)
    assert several.shape == (4, 9)


def test_generate_without_cache() -> None:
    model = make_model(torch.float64)
    prompt = random_ids(1, 6)
    out = model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=False, **GEN)
    assert torch.equal(out, greedy_by_hand(model, prompt, 5))
