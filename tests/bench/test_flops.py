"""Analytical FLOPs (``tttlm.bench.flops``) against ``torch.utils.flop_counter.FlopCounterMode`` on tiny models.

The counter sees matrix products only, so it is compared with ``dense + mixing + lm_head`` (``other`` is the
elementwise part). Tolerance 2 %: the convolutions of transformers' Mamba layers run over the padded input, their
decode-step conv is elementwise, and the TTT forms may batch a few extra products; the attention archs are exact.
The counter counts SDPA as if unmasked (every query against every key of the call), while the formulas count the
pairs the causal mask lets through; the attention tests convert one into the other.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tttlm.bench.flops import (
    Flops,
    attention_pairs,
    decode_flops_per_token,
    forward_flops,
    has_flop_formula,
    prefill_flops_per_token,
    train_flops_per_token,
    ttt_chunks,
)
from tttlm.models import build
from tttlm.models.hf_compat import cache_argument, output_cache
from tttlm.models.registry import make_config, param_count

TOLERANCE = 0.02


def _counted(model: torch.nn.Module, ids: torch.Tensor, cache: object = None) -> tuple[int, object]:
    """FLOPs the counter sees in one call, with the math SDPA backend (the CPU fused kernel is not counted).

    The parameters are frozen first: the counter's module tracker hooks every module input that requires grad,
    and transformers 5.25's Mamba-2 passes a parameter (the conv weight) as a module input, which the tracker
    cannot hook under no_grad ("Expected gradient function to be set")."""
    model.requires_grad_(False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(input_ids=ids, **cache_argument(cache), use_cache=True, logits_to_keep=1)
    return counter.get_total_flops(), output_cache(out)


def _matmuls(flops: Flops) -> int:
    return flops.dense + flops.mixing + flops.lm_head


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [
        ("ttt-linear", {}),
        ("ttt-linear", {"backbone": "mamba"}),
        ("ttt-mlp", {}),
        ("gated-deltanet", {}),
        ("mamba", {}),
        ("mamba2", {}),
    ],
)
def test_recurrent_archs_match_the_flop_counter(arch: str, overrides: dict[str, str]) -> None:
    torch.manual_seed(0)
    model = build(arch, "tiny", **overrides).eval()
    ids = torch.randint(model.config.vocab_size, (1, 72))
    # a prefill of 72 tokens (a partial mini-batch of 16, a partial chunk of 64), a continuation of 25 starting
    # inside a mini-batch, then one decode step; for mamba the prefill only (the formula is the selective scan's;
    # how a step or a continuation is computed is an implementation choice of the mixer)
    calls = [(72, 0)] if arch == "mamba" else [(72, 0), (25, 72), (1, 97)]
    cache = None
    for tokens, context in calls:
        counted, cache = _counted(model, ids[:, :tokens], cache)
        assert counted == pytest.approx(_matmuls(forward_flops(model.config, tokens, context)), rel=TOLERANCE)


@pytest.mark.parametrize(("arch", "overrides"), [("transformer", {}), ("swa", {"sliding_window": 8})])
def test_attention_matches_the_flop_counter(arch: str, overrides: dict[str, int]) -> None:
    torch.manual_seed(0)
    model = build(arch, "tiny", **overrides).eval()
    seq = 8  # within the window: swa's prefill is one causal SDPA call, like the transformer's
    ids = torch.randint(model.config.vocab_size, (1, 12))
    counted, cache = _counted(model, ids[:, :seq])
    flops = forward_flops(model.config, seq)
    unmasked = flops.mixing * seq * seq // attention_pairs(0, seq)
    assert counted == flops.dense + flops.lm_head + unmasked
    for _ in range(3):  # decode past the window: swa reads at most its window
        counted, cache = _counted(model, ids[:, :1], cache)
        assert counted == _matmuls(forward_flops(model.config, 1, seq))
        seq += 1


@pytest.mark.parametrize("overrides", [{}, {"lact_use_muon": True}, {"short_conv": True}])
def test_lact_matches_the_flop_counter(overrides: dict) -> None:
    torch.manual_seed(0)
    model = build("ttt-kvb", "tiny", lact_chunk_size=16, **overrides).eval()
    seq = 40  # within the 64-token window (one causal SDPA call) and across two chunk updates
    ids = torch.randint(model.config.vocab_size, (1, 44))
    counted, cache = _counted(model, ids[:, :seq])
    flops = forward_flops(model.config, seq)
    attention = 4 * model.config.hidden_size * attention_pairs(0, seq) * model.config.num_hidden_layers
    unmasked = attention * seq * seq // attention_pairs(0, seq)
    assert counted == pytest.approx(flops.dense + flops.lm_head + flops.mixing - attention + unmasked, rel=TOLERANCE)
    for _ in range(3):  # decode: one token's read and gradient, a chunk update when one closes
        counted, cache = _counted(model, ids[:, seq : seq + 1], cache)
        assert counted == pytest.approx(_matmuls(forward_flops(model.config, 1, seq)), rel=TOLERANCE)
        seq += 1


@pytest.mark.parametrize(
    ("context", "tokens", "window"), [(0, 7, None), (5, 9, None), (0, 20, 6), (3, 4, 6), (9, 5, 4)]
)
def test_attention_pairs_count_the_mask(context: int, tokens: int, window: int | None) -> None:
    queries = torch.arange(context, context + tokens)[:, None]
    keys = torch.arange(context + tokens)[None, :]
    visible = keys <= queries
    if window is not None:
        visible &= keys > queries - window
    assert attention_pairs(context, tokens, window) == int(visible.sum())


def test_ttt_chunks_follow_mini_batches() -> None:
    assert ttt_chunks(0, 40, 16) == [16, 16, 8]
    assert ttt_chunks(10, 30, 16) == [6, 16, 8]
    assert ttt_chunks(15, 1, 16) == [1]


def test_per_token_figures() -> None:
    transformer, ttt = make_config("transformer", "125m"), make_config("ttt-linear", "125m")
    # attention grows with the context, TTT does not
    assert prefill_flops_per_token(transformer, 8192) > 1.5 * prefill_flops_per_token(transformer, 512)
    assert prefill_flops_per_token(ttt, 8192) == pytest.approx(prefill_flops_per_token(ttt, 512), rel=0.01)
    assert decode_flops_per_token(ttt, 16384) == decode_flops_per_token(ttt, 1024)
    assert decode_flops_per_token(transformer, 16384) > decode_flops_per_token(transformer, 1024)
    # training: 3 × the forward with every position's logits; about 6 N per token at 125m
    assert train_flops_per_token(ttt, 512) == 3 * forward_flops(ttt, 512, 0, 512).total / 512
    assert train_flops_per_token(ttt, 512) == pytest.approx(6 * param_count("ttt-linear", "125m"), rel=0.15)
    # a chunked prefill sums its calls
    chunked = forward_flops(ttt, 300, 0, 1).total + forward_flops(ttt, 212, 300, 1).total
    assert prefill_flops_per_token(ttt, 512, chunk_size=300) == chunked / 512


def test_bad_inputs_are_refused() -> None:
    config = make_config("ttt-linear", "tiny")
    with pytest.raises(ValueError, match="tokens must be an integer >= 1"):
        forward_flops(config, 0)
    with pytest.raises(ValueError, match="cannot exceed tokens"):
        forward_flops(config, 4, 0, 5)
    e2e = make_config("ttt-e2e", "tiny")
    assert not has_flop_formula(e2e)
    with pytest.raises(ValueError, match="no FLOP formula for E2EConfig"):
        forward_flops(e2e, 4)
