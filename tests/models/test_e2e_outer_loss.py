"""TTT-E2E's outer loss scored inside each inner step (``E2EModel._learn``): the same loss and every gradient as
the whole-sequence path (``inner_loop.mini_batch_nll`` on the call's logits; float64, ≤ 1e-10) in every remat mode,
for any ``logits_to_keep``, and a lower peak of live tensor memory in a training step with a large vocabulary (it
fails if the whole sequence's log-probabilities or logits are kept)."""

from __future__ import annotations

import pytest
import torch
from baseline_testing import random_ids, rel_err
from e2e_small import SMALL_E2E, small_e2e
from torch import Tensor

from tttlm.bench.live_memory import TensorMemory
from tttlm.models import E2EForCausalLM
from tttlm.models.e2e.inner_loop import mini_batch_nll, outer_loss

TOL64 = 1e-10  # float64: the same per-token NLLs summed in another order


BOS = 12  # some targets of the test inputs are BOS: the release's mask is exercised


def _model(**overrides: object) -> E2EForCausalLM:
    return small_e2e(**{"bos_token_id": BOS, **overrides})


def _whole_sequence_loss(model: E2EForCausalLM, chunk: Tensor, cache: object, start: int) -> tuple[Tensor, object]:
    """The loss from the call's whole logits, as before the outer loss moved into the inner steps."""
    out = model(chunk, past_key_values=cache, use_cache=True)
    sums, counts = mini_batch_nll(out.logits, model._outer_labels(chunk), model.config.mini_batch_size, start)
    return outer_loss(sums, counts, model.config.loss_reduction), out.past_key_values


def _loss_and_grads(model: E2EForCausalLM, ids: Tensor, pieces: int, chunked: bool) -> tuple[Tensor, dict]:
    """The summed loss of ``ids`` read in ``pieces`` calls that continue one cache, and every parameter's gradient."""
    model.zero_grad()
    cache, loss, start = None, 0.0, 0
    for chunk in ids.tensor_split(pieces, dim=1):
        if chunked:
            out = model(chunk, labels=chunk, past_key_values=cache, use_cache=True)
            cache, piece = out.past_key_values, out.loss
        else:
            piece, cache = _whole_sequence_loss(model, chunk, cache, start)
        loss, start = loss + piece, start + chunk.shape[1]
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("remat", ["none", "inner", "all"])
@pytest.mark.parametrize(
    ("settings", "pieces"),
    [({}, 1), ({"loss_reduction": "token"}, 1), ({"meta_gradient": "first_order"}, 1), ({}, 3)],
    ids=["exact", "token-mean", "first-order", "three-calls"],
)
def test_the_chunked_outer_loss_equals_the_whole_sequence_one(settings: dict, pieces: int, remat: str) -> None:
    ids = random_ids(2, 23, seed=1) % SMALL_E2E["vocab_size"]
    assert bool((ids == BOS).any())
    model = _model(remat=remat, **settings)
    loss, grads = _loss_and_grads(model, ids, pieces, chunked=True)
    whole, whole_grads = _loss_and_grads(model, ids, pieces, chunked=False)
    assert rel_err(loss, whole) < TOL64
    for name, grad in whole_grads.items():
        assert grad is not None, name
        assert grad.abs().max() > 0, name
        assert rel_err(grads[name], grad) < TOL64, name


def test_logits_to_keep_leaves_the_loss_unchanged_and_returns_only_the_kept_logits() -> None:
    ids = random_ids(2, 23, seed=1) % SMALL_E2E["vocab_size"]
    model = _model(remat="all")
    full = model(ids, labels=ids)
    last = model(ids, labels=ids, logits_to_keep=1)
    picked = model(ids, labels=ids, logits_to_keep=torch.tensor([17, 2]))
    assert last.logits.shape == (2, 1, SMALL_E2E["vocab_size"])
    assert rel_err(last.logits, full.logits[:, -1:]) < 1e-14
    assert rel_err(picked.logits, full.logits[:, [17, 2]]) < 1e-14
    assert rel_err(last.loss, full.loss) < TOL64
    assert rel_err(picked.loss, full.loss) < TOL64


def _peak(step: object) -> int:
    with TensorMemory() as memory:
        step().backward()
    return memory.peak


def test_a_training_step_keeps_no_whole_sequence_log_probabilities() -> None:
    # a vocabulary large against the model: the whole sequence's log-probabilities, their gradient and the logits'
    # gradient dominate the peak of the whole-sequence path (measured: 3.4 T x V float64; 1.4 with
    # logits_to_keep=1, 2.4 returning every position's logits)
    vocab, seq = 8192, 64
    model = _model(vocab_size=vocab, remat="all")
    ids = random_ids(1, seq, seed=2) % vocab
    logits_bytes = seq * vocab * 8

    def whole() -> Tensor:
        return _whole_sequence_loss(model, ids, None, 0)[0]

    whole_peak = _peak(whole)
    model.zero_grad(set_to_none=True)
    last_peak = _peak(lambda: model(ids, labels=ids, use_cache=False, logits_to_keep=1).loss)
    model.zero_grad(set_to_none=True)
    every_peak = _peak(lambda: model(ids, labels=ids, use_cache=False).loss)
    assert whole_peak - last_peak > 1.5 * logits_bytes, (whole_peak, last_peak)
    assert whole_peak - every_peak > 0.5 * logits_bytes, (whole_peak, every_peak)
