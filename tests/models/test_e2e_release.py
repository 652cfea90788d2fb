"""TTT-E2E against the official release's own outputs (``tests/fixtures/ttt-e2e-official-*``, see their README).

Each fixture holds what the release's JAX code computes in float32 for a tiny model: the per-token NLL with
test-time training on, the meta loss, the exact meta-gradient of every parameter, and the NLL with no test-time
update. Our model is built from the fixture's config (``release.release_config``) and parameters
(``release.from_release``), and must reproduce all of it to ≤ 1e-5 relative (float32 on both sides; measured
≤ 3e-6). The second half checks that the comparison has teeth: each plausible mistake (the prime MLP after the
static one, no QK-norm, no post-norm, a clip per tensor instead of global, BOS targets counted, no inner-lr warm-up)
moves some output far beyond the tolerance.

Every fixture of ``e2e_release_testing.FIXTURES`` is checked (another release checkpoint needs no code change).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from e2e_release_testing import FIXTURES, Fixture
from torch import Tensor

import tttlm.models.e2e.modeling as e2e_modeling
from tttlm.models.e2e.configuration import REMAT_MODES
from tttlm.models.e2e.inner_loop import sgd_step
from tttlm.models.e2e.modeling import E2EForCausalLM
from tttlm.models.e2e.release import from_release, release_config

TOL = 1e-5  # float32 against float32 computed by other code in another order: 3e-6 measured at worst


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def fixture(request: pytest.FixtureRequest) -> Fixture:
    return Fixture.load(request.param)


def _model(fixture: Fixture, **overrides: object) -> E2EForCausalLM:
    model_cfg, training_cfg = fixture.config["model"], fixture.config["training"]
    model = E2EForCausalLM(release_config(model_cfg, training_cfg, **overrides)).float()
    state = from_release(fixture.params, release_config(model_cfg, training_cfg))
    # a variant without some norms has no place for their weights
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=True)
    model.set_inner_lr_scale(fixture.warmup_multiplier)
    return model.train()


def _meta(model: E2EForCausalLM, fixture: Fixture) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Per-token NLL (T,), the meta loss and every parameter's gradient, test-time training on."""
    model.zero_grad()
    ids = fixture.ids
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    t = fixture.expected["target_tokens"].shape[0]
    nll = F.cross_entropy(out.logits[0, :t].detach(), fixture.expected["target_tokens"], reduction="none")
    return nll, out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _rel(ours: Tensor, theirs: Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def test_meta_token_nll_and_meta_loss_equal_the_release(fixture: Fixture) -> None:
    nll, loss, _ = _meta(_model(fixture), fixture)
    assert _rel(nll, fixture.expected["meta_token_nll"]) <= TOL
    assert _rel(loss, fixture.expected["meta_loss"]) <= TOL


@pytest.mark.parametrize("remat", REMAT_MODES)
def test_every_meta_gradient_equals_the_release(fixture: Fixture, remat: str) -> None:
    model = _model(fixture, remat=remat)
    assert model.model.remat == remat
    _, _, grads = _meta(model, fixture)
    expected = fixture.grads()
    assert set(grads) == set(expected), "every parameter has a release gradient and vice versa"
    errors = {name: _rel(grads[name], g) for name, g in expected.items()}
    worst = sorted(errors.items(), key=lambda item: -item[1])[:3]
    assert worst[0][1] <= TOL, worst


def test_no_test_time_update_gives_the_release_pretrain_nll(fixture: Fixture) -> None:
    model = _model(fixture)
    model.set_inner_lr_scale(0.0)
    with torch.no_grad():
        out = model(input_ids=fixture.ids, labels=fixture.ids, use_cache=False)
    t = fixture.expected["target_tokens"].shape[0]
    nll = F.cross_entropy(out.logits[0, :t], fixture.expected["target_tokens"], reduction="none")
    assert _rel(nll, fixture.expected["pretrain_token_nll"]) <= TOL
    assert _rel(out.loss, fixture.expected["pretrain_loss"]) <= TOL


def test_inference_mode_streams_the_release_nll_token_by_token(fixture: Fixture) -> None:
    # the first-order, detached inference path and the cache give the same forward values as one training call
    model = _model(fixture).eval()
    ids = fixture.ids
    with torch.inference_mode():
        out = model(input_ids=ids[:, :40], use_cache=True)
        cache, logits = out.past_key_values, [out.logits]
        for t in range(40, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            logits.append(out.logits)
    t = fixture.expected["target_tokens"].shape[0]
    logits = torch.cat(logits, dim=1)[0, :t]
    nll = F.cross_entropy(logits, fixture.expected["target_tokens"], reduction="none")
    assert _rel(nll, fixture.expected["meta_token_nll"]) <= TOL


def test_the_warmup_multiplier_is_the_release_formula_at_the_fixture_step(fixture: Fixture) -> None:
    training = fixture.config["training"]
    lr, init, warmup, step = (
        training["optimizer_inner"]["lr"],
        training["ilr_init"],
        training["ilr_warmup_steps"],
        training["step"],
    )
    # the release's get_ilr_multiplier, written out
    assert fixture.warmup_multiplier == pytest.approx((init + (lr - init) * min(1, (step + 1) / warmup)) / lr, 1e-15)


# ------------------------------------------------------------------------------ the comparison catches mistakes


def _mismatch(fixture: Fixture, model: E2EForCausalLM) -> float:
    """The largest relative error of the meta NLL or of any meta-gradient."""
    nll, _, grads = _meta(model, fixture)
    errors = [_rel(nll, fixture.expected["meta_token_nll"])]
    errors += [_rel(grads[n], g) for n, g in fixture.grads().items() if n in grads]
    return max(errors)


@pytest.mark.parametrize(
    "mistake",
    [
        {"prime_position": "after_static"},  # the prime MLP after the static one
        {"qk_norm": False},  # no QK-norm
        {"post_norm": False},  # pre-norm only
        {"mask_bos_targets": False},  # BOS targets counted in the losses
        {"rope_pairing": "half"},  # Llama's RoPE pairing
    ],
    ids=lambda m: next(iter(m)),
)
def test_a_wrong_architecture_fails_the_comparison(fixture: Fixture, mistake: dict) -> None:
    assert _mismatch(fixture, _model(fixture, **mistake)) > 100 * TOL


def test_a_clip_per_tensor_instead_of_global_fails_the_comparison(
    fixture: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def per_tensor_clip(weights, grads, lrs, clip):
        return [sgd_step([w], [g], [lr], clip)[0] for w, g, lr in zip(weights, grads, lrs, strict=True)]

    monkeypatch.setattr(e2e_modeling, "sgd_step", per_tensor_clip)
    assert _mismatch(fixture, _model(fixture)) > 100 * TOL


def test_no_inner_lr_warmup_fails_the_comparison(fixture: Fixture) -> None:
    model = _model(fixture)
    model.set_inner_lr_scale(1.0)
    assert _mismatch(fixture, model) > 100 * TOL


def test_the_clip_is_global_over_every_updated_block() -> None:
    # the fixture has one updated block (suffix_len 1), where per block and global agree; with two they differ
    torch.manual_seed(0)
    weights = [torch.randn(1, 3, 4, dtype=torch.float64) for _ in range(6)]  # gate, up, down of two blocks
    grads = [torch.randn_like(w) for w in weights]
    grads[3:] = [10 * g for g in grads[3:]]  # the second block's gradient dominates the norm
    total = torch.sqrt(sum(g.square().sum() for g in grads))
    stepped = sgd_step(weights, grads, [0.5] * 6, clip=1.0)
    for w, g, new in zip(weights, grads, stepped, strict=True):
        torch.testing.assert_close(new, w - 0.5 * g / total, rtol=1e-14, atol=0)
    per_block = sgd_step(weights[:3], grads[:3], [0.5] * 3, clip=1.0)
    assert not torch.allclose(per_block[0], stepped[0])
