"""Padded batches, for every arch: each row gives what it gives alone (left or right padding, prefill and greedy
``generate``, beam search), because a padded token never enters a recurrent state (``base.forward_by_row``)."""

from __future__ import annotations

import pytest
import torch
from baseline_testing import CASE_IDS, CASES, make, random_ids
from torch import Tensor

LENGTHS = (9, 5, 7)  # rows of different lengths: different offsets inside their mini-batches and windows
PAD = 0


def padded(rows: list[Tensor], side: str) -> tuple[Tensor, Tensor]:
    """(ids, attention_mask), each (len(rows), longest): the rows padded with PAD on ``side``."""
    longest = max(r.shape[1] for r in rows)
    ids = torch.full((len(rows), longest), PAD)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(longest - row.shape[1], longest) if side == "left" else slice(0, row.shape[1])
        ids[i, span], mask[i, span] = row[0], 1
    return ids, mask


def _rows() -> list[Tensor]:
    return [random_ids(1, n, seed=10 + n) for n in LENGTHS]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_a_padded_batch_gives_every_row_its_own_logits(arch: str, overrides: dict, side: str) -> None:
    model, rows = make(arch, **overrides), _rows()
    ids, mask = padded(rows, side)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(row).logits[0]
            real = mask[i].bool()
            # float64 everywhere (transformers' Llama: its masked SDPA path, ~1e-8)
            torch.testing.assert_close(batched[i, real].double(), alone.double(), rtol=0, atol=1e-7)


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_left_padded_generate_equals_each_row_alone(arch: str, overrides: dict) -> None:
    model, rows = make(arch, **overrides), _rows()
    ids, mask = padded(rows, "left")
    kwargs = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "pad_token_id": PAD}
    batched = model.generate(ids, attention_mask=mask, **kwargs)
    for i, row in enumerate(rows):
        alone = model.generate(row, **kwargs)
        assert torch.equal(batched[i, ids.shape[1] :], alone[0, row.shape[1] :]), f"row {i}"


@pytest.mark.parametrize("arch", ["ttt-linear", "ttt-e2e", "swa"])
def test_beam_search_on_a_padded_batch_equals_each_row_alone(arch: str) -> None:
    model, rows = make(arch), _rows()
    ids, mask = padded(rows, "left")
    kwargs = {"max_new_tokens": 4, "num_beams": 3, "do_sample": False, "pad_token_id": PAD}
    batched = model.generate(ids, attention_mask=mask, **kwargs)
    for i, row in enumerate(rows):
        alone = model.generate(row, **kwargs)
        assert torch.equal(batched[i, ids.shape[1] :], alone[0, row.shape[1] :]), f"row {i}"
