"""primal == dual == step for both TTT ops, in one call and when the sequence is split across calls."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from ttt_testing import FORMS, VARIANT_IDS, VARIANTS, Variant, assert_close, assert_state_close, make_inputs

from tttlm.ops import TTTState, ttt_mlp

# (mini_batch_size, seq): T < b, T == b, T a multiple of b, T not divisible by b
SIZES = [
    (1, 1),
    (1, 7),
    (2, 1),
    (2, 7),
    (2, 8),
    (16, 5),
    (16, 16),
    (16, 37),
    (64, 20),
    (64, 70),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(("b", "seq"), SIZES)
def test_forms_agree(variant: Variant, b: int, seq: int) -> None:
    inputs = make_inputs(variant, seq=seq, mini_batch_size=b, seed=seq * 100 + b)
    z_ref, state_ref = inputs.run("primal")
    assert z_ref.shape == inputs.q.shape
    assert z_ref.dtype == torch.float64
    assert state_ref.position == seq % b
    for form in ("dual", "step"):
        z, state = inputs.run(form)
        assert_close(z, z_ref, msg=f"z ({form} vs primal)")
        assert_state_close(state, state_ref)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_naive_is_the_primal_form(variant: Variant) -> None:
    """ "naive", the primal form's earlier name, still selects it (saved configs and scripts use it)."""
    inputs = make_inputs(variant, seq=11, mini_batch_size=4, seed=3)
    z_primal, state_primal = inputs.run("primal")
    z_naive, state_naive = inputs.run("naive")
    assert torch.equal(z_naive, z_primal)
    assert_state_close(state_naive, state_primal, rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_state_layout(variant: Variant) -> None:
    """Weights (batch, heads, *shape); biases (batch, heads, 1, dim); grad_sums zero at a mini-batch boundary."""
    batch, heads = 2, 3
    inputs = make_inputs(variant, batch=batch, heads=heads, seq=8, mini_batch_size=4)
    _, state = inputs.run()
    present = [p for p in inputs.params if p is not None]
    assert len(state.weights) == len(state.grad_sums) == len(present)
    for w, g, p in zip(state.weights, state.grad_sums, present, strict=True):
        expected = (batch, heads, 1, p.shape[-1]) if p.dim() == 2 else (batch, *p.shape)
        assert w.shape == expected
        assert g.shape == expected
        assert not g.any(), "grad_sums must be zero at a mini-batch boundary"
    assert state.position == 0
    # the state really moved away from W0
    assert not torch.allclose(state.weights[0], present[0].expand_as(state.weights[0]))
    _, open_state = inputs.run(stop=7)
    assert open_state.position == 3
    assert open_state.grad_sums[0].abs().sum() > 0


def test_default_form_is_dual() -> None:
    inputs = make_inputs(Variant("mlp"), seq=9, mini_batch_size=4)
    z_default, _ = ttt_mlp(
        inputs.q,
        inputs.k,
        inputs.v,
        inputs.lr,
        *inputs.params,
        inputs.ln_weight,
        inputs.ln_bias,
        inputs.token_offset,
        mini_batch_size=4,
    )
    z_dual, _ = inputs.run("dual")
    assert torch.equal(z_default, z_dual)


def test_token_offset_none_means_zeros() -> None:
    inputs = make_inputs(Variant("linear"), seq=9, mini_batch_size=4)
    inputs.token_offset = None
    z_none, s_none = inputs.run()
    inputs.token_offset = torch.zeros(4, dtype=torch.float64)
    z_zero, s_zero = inputs.run()
    assert_close(z_none, z_zero)
    assert_state_close(s_none, s_zero)


# (mini_batch_size, seq, split): at 1, inside the first mini-batch, at a boundary, inside a later one, at T-1
SPLITS = [
    (4, 13, 1),
    (4, 13, 3),
    (4, 13, 4),
    (4, 13, 6),
    (4, 13, 8),
    (4, 13, 12),
    (16, 37, 5),
    (16, 37, 16),
    (16, 37, 30),
]
SPLIT_VARIANTS = [Variant("linear"), Variant("linear", bias=False, ln=False), Variant("mlp")]


@pytest.mark.parametrize("variant", SPLIT_VARIANTS, ids=[v.id for v in SPLIT_VARIANTS])
@pytest.mark.parametrize(("b", "seq", "split"), SPLITS)
@pytest.mark.parametrize("prefill_form", ["dual", "primal"])
@pytest.mark.parametrize("form", FORMS)
def test_split_continuation(variant: Variant, b: int, seq: int, split: int, prefill_form: str, form: str) -> None:
    inputs = make_inputs(variant, seq=seq, mini_batch_size=b, seed=split)
    z_full, state_full = inputs.run("primal")
    z1, state1 = inputs.run(prefill_form, stop=split)
    assert state1.position == split % b
    z2, state2 = inputs.run(form, start=split, initial_state=state1)
    assert_close(torch.cat([z1, z2], dim=1), z_full)
    assert_state_close(state2, state_full)


@pytest.mark.parametrize("variant", SPLIT_VARIANTS, ids=[v.id for v in SPLIT_VARIANTS])
@pytest.mark.parametrize("prefill", [0, 3, 4, 7])
def test_token_by_token_continuation(variant: Variant, prefill: int) -> None:
    """Prefill (dual), then T=1 calls of the step form each passing the previous state: the decode loop."""
    seq, b = 11, 4
    inputs = make_inputs(variant, seq=seq, mini_batch_size=b, seed=prefill)
    z_full, state_full = inputs.run("dual")
    outputs = []
    state: TTTState | None = None
    if prefill:
        z, state = inputs.run("dual", stop=prefill)
        outputs.append(z)
    for t in range(prefill, seq):
        z, state = inputs.run("step", start=t, stop=t + 1, initial_state=state)
        assert z.shape[1] == 1
        assert state.position == (t + 1) % b
        outputs.append(z)
    assert_close(torch.cat(outputs, dim=1), z_full)
    assert_state_close(state, state_full)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_many_pieces(variant: Variant) -> None:
    """Irregular pieces, cycling through the forms, equal one call."""
    seq, b = 29, 5
    inputs = make_inputs(variant, seq=seq, mini_batch_size=b, seed=7)
    z_full, state_full = inputs.run("primal")
    cuts = [0, 2, 3, 5, 11, 12, 20, 24, 29]
    outputs, state = [], None
    for i, (start, stop) in enumerate(itertools.pairwise(cuts)):
        z, state = inputs.run(FORMS[i % 3], start=start, stop=stop, initial_state=state)
        outputs.append(z)
    assert_close(torch.cat(outputs, dim=1), z_full)
    assert_state_close(state, state_full)


@pytest.mark.parametrize("variant", [Variant("linear"), Variant("linear", bias=False), Variant("mlp")])
def test_initial_state_from_params_equals_no_state(variant: Variant) -> None:
    """``TTTState.initial(params)`` passed explicitly is the same as passing no state."""
    inputs = make_inputs(variant, seq=9, mini_batch_size=4)
    fresh = TTTState.initial(tuple(p for p in inputs.params if p is not None), inputs.q.shape[0])
    assert fresh.position == 0
    z_a, s_a = inputs.run()
    z_b, s_b = inputs.run(initial_state=fresh)
    assert_close(z_a, z_b)
    assert_state_close(s_a, s_b)


@pytest.mark.parametrize("variant", [Variant("linear"), Variant("mlp")], ids=["linear", "mlp"])
def test_forms_agree_float32(variant: Variant) -> None:
    inputs = make_inputs(variant, seq=21, mini_batch_size=8, dtype=torch.float32)
    z_ref, state_ref = inputs.run("primal")
    assert z_ref.dtype == torch.float32
    for form in ("dual", "step"):
        z, state = inputs.run(form)
        assert_close(z, z_ref, rtol=1e-4, atol=1e-5)
        assert_state_close(state, state_ref, rtol=1e-4, atol=1e-5)


def test_batch_rows_are_independent() -> None:
    """Each batch row only sees its own tokens: running rows separately equals running them together."""
    inputs = make_inputs(Variant("mlp"), batch=3, seq=10, mini_batch_size=4)
    z_all, state_all = inputs.run()
    for row in range(3):
        rows = slice(row, row + 1)
        single = dataclasses.replace(inputs, q=inputs.q[rows], k=inputs.k[rows], v=inputs.v[rows], lr=inputs.lr[rows])
        z, state = single.run()
        assert_close(z, z_all[rows])
        for w, w_all in zip(state.weights, state_all.weights, strict=True):
            assert_close(w, w_all[rows])
