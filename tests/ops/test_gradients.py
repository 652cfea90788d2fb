"""Gradients through the TTT ops: equal between forms, and correct (torch.autograd.gradcheck)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import Tensor
from ttt_testing import FORMS, VARIANT_IDS, VARIANTS, TTTInputs, Variant, assert_close, make_inputs, state_as_leaves

from tttlm.ops import TTTState

GRAD_RTOL = 1e-9
GRAD_ATOL = 1e-11


def outer_loss(z: Tensor, state: TTTState, seed: int = 123) -> Tensor:
    """A random linear functional of the outputs and of every tensor of the final state."""
    gen = torch.Generator().manual_seed(seed)
    loss = (z * torch.randn(z.shape, generator=gen, dtype=z.dtype)).sum()
    for t in (*state.weights, *state.grad_sums):
        loss = loss + (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum()
    return loss


def grads_by_form(inputs: TTTInputs, initial_state: TTTState | None) -> dict[str, dict[str, Tensor | None]]:
    leaves = inputs.named_tensors()
    if initial_state is not None:
        for i, (w, g) in enumerate(zip(initial_state.weights, initial_state.grad_sums, strict=True)):
            leaves[f"state.weights[{i}]"] = w
            leaves[f"state.grad_sums[{i}]"] = g
    out = {}
    for form in FORMS:
        z, state = inputs.run(form, initial_state=initial_state)
        grads = torch.autograd.grad(outer_loss(z, state), list(leaves.values()), allow_unused=True)
        out[form] = dict(zip(leaves, grads, strict=True))
    return out


def compare(grads: dict[str, dict[str, Tensor | None]], expect_none: set[str]) -> None:
    ref = grads["primal"]
    for name, g in ref.items():
        if name in expect_none:
            assert g is None, f"{name} should not receive a gradient"
        else:
            assert g is not None, f"no gradient for {name}"
            assert g.abs().max() > 0, f"zero gradient for {name}"
    for form in ("dual", "step"):
        for name, g_ref in ref.items():
            g = grads[form][name]
            if g_ref is None:
                assert g is None, f"{form}: unexpected gradient for {name}"
            else:
                assert g is not None, f"{form}: no gradient for {name}"
                assert_close(g, g_ref, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=f"d/d{name} ({form} vs primal)")


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(("b", "seq"), [(3, 8), (4, 3), (1, 4)])
def test_input_gradients_agree(variant: Variant, b: int, seq: int) -> None:
    inputs = make_inputs(variant, seq=seq, mini_batch_size=b, seed=11).as_leaves()
    grads = grads_by_form(inputs, None)
    compare(grads, expect_none=set())
    if seq < b:  # offsets of positions no token reached get a zero gradient
        assert not grads["primal"]["token_offset"][seq:].any()


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("prefix", [2, 4])
def test_initial_state_gradients_agree(variant: Variant, prefix: int) -> None:
    """Gradients into a carried state (W_s and, mid mini-batch, the pending sums)."""
    b, seq = 4, 9
    base = make_inputs(variant, seq=prefix + seq, mini_batch_size=b, seed=12)
    with torch.no_grad():
        _, state = base.run(stop=prefix)
    state = state_as_leaves(state)
    inputs = dataclasses.replace(
        base, q=base.q[:, prefix:], k=base.k[:, prefix:], v=base.v[:, prefix:], lr=base.lr[:, prefix:]
    ).as_leaves()
    grads = grads_by_form(inputs, state)
    # with a state the initial weights are not used; at position 0 the (zero) pending sums are not read
    expect_none = {n for n in inputs.named_tensors() if n.startswith(("weight", "bias"))}
    if state.position == 0:
        expect_none |= {n for n in grads["primal"] if n.startswith("state.grad_sums")}
    compare(grads, expect_none)


@pytest.mark.parametrize("variant", [Variant("linear"), Variant("mlp")], ids=["linear", "mlp"])
def test_split_gradients_equal_full(variant: Variant) -> None:
    """Back-propagating through prefill → continuation equals back-propagating through one call."""
    inputs = make_inputs(variant, seq=11, mini_batch_size=4, seed=13).as_leaves()
    leaves = list(inputs.named_tensors().values())
    z, state = inputs.run("dual")
    full = torch.autograd.grad(outer_loss(z, state), leaves)
    z1, s1 = inputs.run("dual", stop=6)
    z2, s2 = inputs.run("step", start=6, initial_state=s1)
    split = torch.autograd.grad(outer_loss(torch.cat([z1, z2], dim=1), s2), leaves)
    for g_split, g_full in zip(split, full, strict=True):
        assert_close(g_split, g_full, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def _gradcheck_fn(inputs: TTTInputs, form: str, with_state: bool):
    """A function of a flat list of tensors for gradcheck, and those tensors (leaves, requires_grad)."""
    names = list(inputs.named_tensors())
    tensors = list(inputs.as_leaves().named_tensors().values())
    state = None
    if with_state:
        with torch.no_grad():
            _, state = inputs.run(stop=1)  # position 1 of 2: W_s and pending sums both matter
        assert state.position == 1
        state = state_as_leaves(state)
        tensors += [*state.weights, *state.grad_sums]
    n_inputs = len(names)
    n_w = 0 if state is None else len(state.weights)

    def fn(*args: Tensor) -> tuple[Tensor, ...]:
        call = dict(zip(names, args[:n_inputs], strict=True))
        params = tuple(call.get(n) for n in ("weight", "bias", "weight1", "bias1", "weight2", "bias2") if n in call)
        if inputs.op == "linear" and "bias" not in call:
            params = (call["weight"], None)
        replaced = dataclasses.replace(
            inputs,
            q=call["q"],
            k=call["k"],
            v=call["v"],
            lr=call["lr"],
            params=params,
            ln_weight=call.get("ln_weight"),
            ln_bias=call.get("ln_bias"),
            token_offset=call.get("token_offset"),
        )
        init = None
        if state is not None:
            rest = args[n_inputs:]
            init = TTTState(tuple(rest[:n_w]), tuple(rest[n_w:]), state.position)
        z, out = replaced.run(form, initial_state=init)
        return (z, *out.weights, *out.grad_sums)

    return fn, tensors


GRADCHECK_VARIANTS = [Variant("linear"), Variant("linear", bias=False, ln=False), Variant("mlp")]


@pytest.mark.parametrize("variant", GRADCHECK_VARIANTS, ids=[v.id for v in GRADCHECK_VARIANTS])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("with_state", [False, True], ids=["fresh", "state"])
def test_gradcheck(variant: Variant, form: str, with_state: bool) -> None:
    inputs = make_inputs(variant, batch=1, seq=5, heads=1, dim=3, hidden=4, mini_batch_size=2, seed=21)
    fn, tensors = _gradcheck_fn(inputs, form, with_state)
    assert torch.autograd.gradcheck(fn, tuple(tensors), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("variant", [Variant("linear"), Variant("mlp")], ids=["linear", "mlp"])
def test_gradgradcheck_dual(variant: Variant) -> None:
    """Second derivatives (needed when an outer loop differentiates through a learned inner learner)."""
    inputs = make_inputs(variant, batch=1, seq=3, heads=1, dim=2, hidden=3, mini_batch_size=2, seed=22)
    fn, tensors = _gradcheck_fn(inputs, "dual", with_state=False)
    assert torch.autograd.gradgradcheck(lambda *a: fn(*a)[0], tuple(tensors), eps=1e-6, atol=1e-6, rtol=1e-5)
