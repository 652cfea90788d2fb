"""The call contract every registry arch keeps (so trainers and evaluators need no per-arch branches):
forward/backward, cached decoding = full forward, chunked prefill, ``generate``, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from baseline_testing import CASE_IDS, CASES, logits_in_pieces, make, random_ids, rel_err
from transformers import LlamaForCausalLM, PreTrainedModel

from tttlm.models import arch_of, load, prefill
from tttlm.models.hf_compat import cache_argument, output_cache

# Cached vs uncached logits, float64 models. Our models and Llama compute the same sums in another order:
# ~1e-15 measured, 1e-10 leaves room and still fails on any real state error (those show up at 1e-3 or more).
# transformers' Mamba classes return float32 logits (`.float()` in their forward) whatever the model dtype, so
# their cached and uncached logits can differ by float32 rounding of the logits: a few 1e-7 relative measured.
# mamba2-swa's Mamba-2 mixers (transformers' scan) cast to float32 inside and keep their state in float32, so a
# float64 model matches its cached decoding to float32 rounding: 8e-8 relative measured.
TOLERANCE = {"mamba": 2e-6, "mamba2": 2e-6, "mamba2-swa": 1e-6}
DEFAULT_TOLERANCE = 1e-10


def _tol(arch: str) -> float:
    return TOLERANCE.get(arch, DEFAULT_TOLERANCE)


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_forward_backward_reaches_every_parameter(arch: str, overrides: dict) -> None:
    model = make(arch, torch.float32, **overrides).train()
    assert isinstance(model, PreTrainedModel)
    ids = random_ids(2, 19)
    out = model(ids, labels=ids)
    assert out.logits.shape == (2, 19, 512)
    assert out.loss.dim() == 0
    assert torch.isfinite(out.loss)
    # near log(512) = 6.24 at init: the head is not degenerate
    assert 5.0 < out.loss.item() < 8.0
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_token_by_token_decoding_equals_full_forward(arch: str, overrides: dict) -> None:
    model = make(arch, **overrides)
    ids = random_ids(2, 19)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    cached = logits_in_pieces(model, ids, [7] + [1] * 12)
    assert rel_err(cached, full) < _tol(arch)


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_chunked_continuation_equals_full_forward(arch: str, overrides: dict) -> None:
    model = make(arch, **overrides)
    ids = random_ids(2, 19)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    assert rel_err(logits_in_pieces(model, ids, [5, 1, 6, 7]), full) < _tol(arch)


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_prefill_gives_the_full_forward_losses_and_a_cache_to_continue(arch: str, overrides: dict) -> None:
    model = make(arch, **overrides)
    ids = random_ids(2, 20)
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits
        result = prefill(model, ids[:, :19], chunk_size=6)
        after = model(ids[:, 19:], **cache_argument(result.past_key_values), use_cache=True).logits
    full = logits.double()
    expected = F.cross_entropy(full[:, :18].flatten(0, 1), ids[:, 1:19].flatten(), reduction="none").view(2, 18)
    assert result.token_loss.shape == (2, 18)
    # the losses keep the logits' precision (float64 here; float32 where the library's Mamba2 head casts to it)
    assert result.token_loss.dtype == torch.promote_types(logits.dtype, torch.float32)
    tol = 1e-10 if result.token_loss.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(result.token_loss.double(), expected, rtol=tol, atol=tol)
    assert rel_err(result.last_logits, full[:, 18]) < 1e-6
    assert rel_err(after[:, -1], full[:, 19]) < _tol(arch)


def test_prefill_rejects_a_bad_chunk_size() -> None:
    model = make("swa")
    with pytest.raises(ValueError, match="chunk_size"):
        prefill(model, random_ids(1, 4), chunk_size=0)


@torch.no_grad()
def _greedy_by_hand(model: PreTrainedModel, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    for _ in range(new_tokens):
        next_id = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_greedy_generate_with_a_cache_equals_a_manual_argmax_loop(arch: str, overrides: dict) -> None:
    # float64 so that near-ties cannot flip between cached and uncached logits; no EOS so all steps run
    model = make(arch, eos_token_id=None, **overrides)
    prompt = random_ids(2, 6)
    out = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    assert out.sequences.shape == (2, 14)
    assert output_cache(out) is not None  # the cache was used
    assert torch.equal(out.sequences, _greedy_by_hand(model, prompt, 8))


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_beam_search_reorders_the_cache(arch: str, overrides: dict) -> None:
    model = make(arch, eos_token_id=None, **overrides)
    prompt = random_ids(2, 5)
    kwargs = {"max_new_tokens": 3, "num_beams": 2, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(model.generate(prompt, **kwargs), model.generate(prompt, use_cache=False, **kwargs))


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_save_and_load_without_knowing_the_arch(arch: str, overrides: dict, tmp_path: Path) -> None:
    model = make(arch, torch.float32, **overrides)
    model.save_pretrained(tmp_path)
    weights = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    assert weights == ["model.safetensors"]  # never a pickle
    loaded = load(tmp_path).eval()
    assert type(loaded) is type(model)
    assert arch_of(loaded) == arch_of(model) == arch
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    ids = random_ids(2, 11)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_transformer_is_transformers_llama_with_sdpa() -> None:
    model = make("transformer")
    assert isinstance(model, LlamaForCausalLM)
    assert model.config._attn_implementation == "sdpa"
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, like the TTT models
