"""Helpers for the registry/baseline tests: every arch at the tiny preset with test-sized windows and chunks."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from tttlm.models import ARCHS, build
from tttlm.models.hf_compat import cache_argument, output_cache

# (arch, overrides): every registry arch, the TTT archs with both backbones
CASES: list[tuple[str, dict]] = [
    ("ttt-linear", {"backbone": "transformer"}),
    ("ttt-linear", {"backbone": "mamba"}),
    ("ttt-mlp", {"backbone": "transformer"}),
    ("ttt-mlp", {"backbone": "mamba"}),
    *[(arch, {}) for arch in ARCHS if arch not in ("ttt-linear", "ttt-mlp")],
]
CASE_IDS = [arch + (f"-{o['backbone']}" if "backbone" in o else "") for arch, o in CASES]

# Small windows, chunks and mini-batches, so that the ~20-token sequences of the tests cross several of them
# (the tiny defaults, e.g. a 64-token window, would make SWA equal full attention there).
TEST_OVERRIDES: dict[str, dict] = {
    "ttt-linear": {"mini_batch_size": 4},
    "ttt-mlp": {"mini_batch_size": 4},
    "full-attention": {"attention_block_size": 4},
    "swa": {"sliding_window": 5, "attention_block_size": 4},
    "hybrid": {"sliding_window": 5, "attention_block_size": 4},
    "mamba2": {"chunk_size": 4},
    "gated-deltanet": {"gdn_chunk_size": 4},
    "gdn-swa": {"gdn_chunk_size": 4, "sliding_window": 5, "attention_block_size": 4},
    "mamba2-swa": {"mamba2_chunk_size": 4, "sliding_window": 5, "attention_block_size": 4},
    "ttt-kvb": {"sliding_window": 5, "lact_chunk_size": 6, "attention_block_size": 4},
    "ttt-kvb-linear": {"sliding_window": 5, "ttt_mini_batch_size": 8, "attention_block_size": 4},
    # inner_lr 1: test-time training moves the logits by ~0.1 here, so a wrong step or state shows
    "ttt-e2e": {"sliding_window": 5, "mini_batch_size": 4, "attention_block_size": 4, "inner_lr": 1.0},
}

VOCAB = 512  # the tiny preset's vocabulary


def make(arch: str, dtype: torch.dtype = torch.float64, seed: int = 0, **overrides: object) -> PreTrainedModel:
    """A seeded tiny model of ``arch`` with the test overrides, in eval mode and ``dtype``."""
    torch.manual_seed(seed)
    model = build(arch, "tiny", **{**TEST_OVERRIDES.get(arch, {}), **overrides})
    return model.to(dtype).eval()


def random_ids(batch: int, seq: int, seed: int = 1) -> Tensor:
    """(batch, seq) random token ids of the tiny vocabulary."""
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits_in_pieces(model: PreTrainedModel, ids: Tensor, lengths: list[int]) -> Tensor:
    """Logits of ``ids`` fed in consecutive pieces of ``lengths`` tokens through one cache."""
    assert sum(lengths) == ids.shape[1]
    cache, pieces, start = None, [], 0
    for n in lengths:
        out = model(ids[:, start : start + n], **cache_argument(cache), use_cache=True)
        cache = output_cache(out)
        pieces.append(out.logits.double())
        start += n
    return torch.cat(pieces, dim=1)


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """max |actual − expected| / max |expected|."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())
