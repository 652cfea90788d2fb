"""TTT-E2E's remat (``E2EConfig.remat``, the release's ``jax.remat`` of every inner step and of every block below
the updated ones): the same loss and every gradient as without it (float64, ≤ 1e-10), and a lower peak of live
tensor memory in a training step (it fails if a remat is silently skipped). Its agreement with the release's own
meta-gradients, in every mode, is in ``test_e2e_release.py``."""

from __future__ import annotations

import warnings

import pytest
import torch
from baseline_testing import random_ids, rel_err
from e2e_small import SMALL_E2E, small_e2e
from torch import Tensor

from tttlm.bench.live_memory import TensorMemory
from tttlm.models import E2EForCausalLM
from tttlm.models.e2e.configuration import resolve_remat

TOL64 = 1e-10  # float64: the same operations recomputed; measured 0 (bit-identical)


def _loss_and_grads(model: E2EForCausalLM, ids: Tensor, pieces: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The summed loss of ``ids`` read in ``pieces`` calls that continue one cache, and every parameter's gradient."""
    model.zero_grad()
    cache, loss = None, 0.0
    for chunk in ids.tensor_split(pieces, dim=1):
        out = model(chunk, labels=chunk, past_key_values=cache, use_cache=True)
        cache, loss = out.past_key_values, loss + out.loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("remat", ["inner", "all"])
@pytest.mark.parametrize(
    ("settings", "pieces"),
    [
        ({}, 1),
        ({"inner_grad_clip": 0.05}, 1),  # the clip active in every step
        ({"meta_gradient": "first_order"}, 1),
        ({"prime_position": "after_static", "loss_reduction": "token"}, 1),
        ({}, 3),  # calls of 8, 8, 7 tokens: open mini-batches stepped at the next call
        ({"short_conv": True}, 3),  # the conv's state carried, and restored for the steps, as the KV windows
    ],
    ids=["exact", "clip-active", "first-order", "after-static", "three-calls", "short-conv"],
)
def test_remat_gives_the_same_loss_and_every_gradient(settings: dict, pieces: int, remat: str) -> None:
    ids = random_ids(2, 23, seed=1) % SMALL_E2E["vocab_size"]
    plain = small_e2e(remat="none", **settings)
    rematerialised = small_e2e(remat=remat, **settings)
    assert plain.model.remat == "none"
    assert rematerialised.model.remat == remat
    loss, grads = _loss_and_grads(plain, ids, pieces)
    loss_remat, grads_remat = _loss_and_grads(rematerialised, ids, pieces)
    assert rel_err(loss_remat, loss) < TOL64
    assert set(grads_remat) == set(grads)
    for name, grad in grads.items():
        assert grad is not None, name
        assert grad.abs().max() > 0, name  # every parameter, W_0 and log η included, is reached
        assert rel_err(grads_remat[name], grad) < TOL64, name


def test_auto_remats_everything_on_an_accelerator_and_gradient_checkpointing_does_too() -> None:
    assert resolve_remat("auto", "cuda") == "all"  # the release's, where memory is the limit
    assert resolve_remat("auto", "cpu") == "none"
    assert resolve_remat("inner", "cuda") == "inner"
    assert small_e2e().model.remat == "none"  # the default "auto", on the CPU
    model = small_e2e(remat="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames it activation_checkpointing_enable
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    assert model.model.remat == "all"
    assert model.eval().model.remat == "none"  # transformers' switch acts in training mode only


def _peak_bytes(model: E2EForCausalLM, ids: Tensor) -> int:
    with TensorMemory() as memory:
        model(ids, labels=ids, use_cache=False).loss.backward()
    return memory.peak


def test_remat_lowers_the_peak_memory_of_a_training_step() -> None:
    # 16 mini-batches: without remat all their inner steps' activations are alive at once, with it one at a time
    ids = random_ids(1, 64, seed=2) % SMALL_E2E["vocab_size"]
    peak = {remat: _peak_bytes(small_e2e(remat=remat), ids) for remat in ("none", "inner", "all")}
    # measured: inner 0.40 x none, all 0.26 x none (the two lower blocks' activations too)
    assert peak["inner"] < 0.55 * peak["none"], peak
    assert peak["all"] < 0.8 * peak["inner"], peak


def test_the_recomputation_runs_under_the_forwards_autocast() -> None:
    # bf16 autocast on the CPU, as tttlm train's on CUDA: the recomputed step must run in bf16 again. The gradients
    # then agree to 0.1 % (measured; no remat sums the cast weights' gradients over all steps in bf16, remat per
    # step); a recomputation in float32 differs by 3 %
    ids = random_ids(2, 23, seed=1) % SMALL_E2E["vocab_size"]
    grads = {}
    for remat in ("none", "inner"):
        model = small_e2e(remat=remat).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        grads[remat] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert rel_err(grads["inner"], grads["none"]) < 1e-2
