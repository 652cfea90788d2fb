"""Helpers for the model tests: a tiny model builder, random token ids, step-by-step decoding."""

from __future__ import annotations

import torch
from torch import Tensor

from tttlm import TTTCache, TTTConfig, TTTForCausalLM
from tttlm.models.hf_compat import cache_argument, output_cache

# (layer_type, backbone): every combination the model supports
VARIANTS = [("linear", "transformer"), ("linear", "mamba"), ("mlp", "transformer"), ("mlp", "mamba")]
VARIANT_IDS = [f"{layer}-{backbone}" for layer, backbone in VARIANTS]
VOCAB = 512  # the tiny preset's vocabulary

# Tests use b = 4 so that short sequences cross several mini-batch boundaries, and a 5x larger init than the
# default (0.1 instead of 0.02) so that the TTT path moves the logits a lot: with the default init the layers
# are close to the identity and an error in the carried state would change the logits only by ~1e-3.
TEST_DEFAULTS = {"mini_batch_size": 4, "initializer_range": 0.1}


def make_config(**overrides: object) -> TTTConfig:
    """The "tiny" preset with the test defaults and ``overrides``."""
    return TTTConfig.from_preset("tiny", **{**TEST_DEFAULTS, **overrides})


def make_model(dtype: torch.dtype = torch.float64, seed: int = 0, **overrides: object) -> TTTForCausalLM:
    """A seeded tiny ``TTTForCausalLM`` in eval mode and ``dtype``."""
    torch.manual_seed(seed)
    return TTTForCausalLM(make_config(**overrides)).to(dtype).eval()


def random_ids(batch: int, seq: int, seed: int = 1) -> Tensor:
    """(batch, seq) random token ids of the tiny vocabulary."""
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits_in_pieces(model: TTTForCausalLM, ids: Tensor, lengths: list[int]) -> tuple[Tensor, TTTCache]:
    """Logits of ``ids`` (batch, seq) fed in consecutive pieces of ``lengths`` tokens through one cache."""
    assert sum(lengths) == ids.shape[1]
    cache, pieces, start = None, [], 0
    for n in lengths:
        out = model(ids[:, start : start + n], **cache_argument(cache), use_cache=True)
        assert cache is None or output_cache(out) is cache  # updated in place
        cache = output_cache(out)
        pieces.append(out.logits)
        start += n
    return torch.cat(pieces, dim=1), cache


def prefill_then_decode(model: TTTForCausalLM, ids: Tensor, prefill: int) -> Tensor:
    """Logits of ``ids`` from one prefill of ``prefill`` tokens followed by one forward call per token."""
    return logits_in_pieces(model, ids, [prefill] + [1] * (ids.shape[1] - prefill))[0]


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """max |actual − expected| / max |expected|."""
    return float((actual - expected).abs().max() / expected.abs().max())
