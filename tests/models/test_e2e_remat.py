"""TTT-E2E's remat of the inner loop (``E2EConfig.inner_remat``, the release's ``jax.remat`` per chunk): the same
loss and every gradient as without it (float64, ≤ 1e-10), and fewer activations kept by the forward for the
backward (it fails if the checkpoint is silently skipped). Its agreement with the release's own meta-gradients is
in ``test_e2e_release.py`` (with and without remat)."""

from __future__ import annotations

import warnings

import pytest
import torch
from baseline_testing import random_ids, rel_err
from torch import Tensor

from tttlm.models import E2EForCausalLM, build

TOL64 = 1e-10  # float64: the same operations recomputed; measured 0 (bit-identical)

# 4 blocks, the top 2 updated, learnable step sizes, mini-batches of 4: a 23-token input has 5 whole mini-batches
# and an open one, so every inner-loop path (step, open mini-batch, step on a completed open one) is exercised
MODEL = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "num_hidden_layers": 4,
    "intermediate_size": 24,
    "updated_fraction": 0.5,
    "sliding_window": 5,
    "attention_block_size": 4,
    "mini_batch_size": 4,
    "inner_lr": 0.5,
    "inner_lr_learnable": True,
    "initializer_range": 0.2,
}


def _model(**overrides: object) -> E2EForCausalLM:
    torch.manual_seed(0)
    return build("ttt-e2e", "tiny", match_params=False, **{**MODEL, **overrides}).double().train()


def _loss_and_grads(model: E2EForCausalLM, ids: Tensor, pieces: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The summed loss of ``ids`` read in ``pieces`` calls that continue one cache, and every parameter's gradient."""
    model.zero_grad()
    cache, loss = None, 0.0
    for chunk in ids.tensor_split(pieces, dim=1):
        out = model(chunk, labels=chunk, past_key_values=cache, use_cache=True)
        cache, loss = out.past_key_values, loss + out.loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("settings", "pieces"),
    [
        ({}, 1),
        ({"inner_grad_clip": 0.05}, 1),  # the clip active in every step
        ({"meta_gradient": "first_order"}, 1),
        ({"prime_position": "after_static", "loss_reduction": "token"}, 1),
        ({}, 3),  # calls of 8, 8, 7 tokens: open mini-batches stepped at the next call
    ],
    ids=["exact", "clip-active", "first-order", "after-static", "three-calls"],
)
def test_remat_gives_the_same_loss_and_every_gradient(settings: dict, pieces: int) -> None:
    ids = random_ids(2, 23, seed=1) % MODEL["vocab_size"]
    plain = _model(inner_remat=False, **settings)
    remat = _model(inner_remat=True, **settings)
    assert not plain.model.inner_remat
    assert remat.model.inner_remat
    loss, grads = _loss_and_grads(plain, ids, pieces)
    loss_remat, grads_remat = _loss_and_grads(remat, ids, pieces)
    assert rel_err(loss_remat, loss) < TOL64
    assert set(grads_remat) == set(grads)
    for name, grad in grads.items():
        assert grad is not None, name
        assert grad.abs().max() > 0, name  # every parameter, W_0 and log η included, is reached
        assert rel_err(grads_remat[name], grad) < TOL64, name


def test_the_release_remats_by_default_and_gradient_checkpointing_turns_it_on() -> None:
    assert _model().model.inner_remat
    model = _model(inner_remat=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames it activation_checkpointing_enable
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    assert model.model.inner_remat
    assert not model.eval().model.inner_remat  # as the lower blocks' checkpointing: training mode only


def _saved_bytes(model: E2EForCausalLM, ids: Tensor) -> int:
    """Bytes of the distinct storages (parameters excluded) that one training forward saves for the backward
    outside any checkpoint: a checkpointed region saves into its own hooks, not into these."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(ids, labels=ids, use_cache=False).loss
    loss.backward()
    return sum(saved.values())


def test_remat_keeps_far_fewer_activations_for_the_backward() -> None:
    ids = random_ids(1, 64, seed=2) % MODEL["vocab_size"]
    plain = _saved_bytes(_model(inner_remat=False), ids)
    remat = _saved_bytes(_model(inner_remat=True), ids)
    # measured: 0.21 (what is left: the two lower blocks, the outer loss's log-probabilities, the embedding)
    assert remat < 0.35 * plain, (remat, plain)
