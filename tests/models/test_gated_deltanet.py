"""The gated delta rule: chunk form = recurrent form (float64), an exact associative-memory property, agreement
with transformers' Qwen3-Next reference functions and (on CUDA) flash-linear-attention, and the layer's cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from baseline_testing import rel_err

from tttlm.layers.gated_deltanet import GatedDeltaNet
from tttlm.ops.gated_delta_rule import fla_available, gated_delta_rule

TOL64 = 1e-12  # the same maths in float64, different association


def _inputs(
    seq: int, seed: int = 0, dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    batch, heads, dk, dv = 2, 3, 8, 12

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q = randn(batch, seq, heads, dk)
    k = F.normalize(randn(batch, seq, heads, dk), dim=-1)
    v = randn(batch, seq, heads, dv)
    decay = -torch.rand(batch, seq, heads, generator=g, dtype=torch.float64)  # α in (e^-1, 1]
    beta = torch.rand(batch, seq, heads, generator=g, dtype=torch.float64)
    state = randn(batch, heads, dk, dv)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v, decay, beta, state))


@pytest.mark.parametrize(("seq", "chunk_size"), [(1, 4), (16, 4), (37, 8), (37, 64), (50, 16)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_form_equals_recurrent_form(seq: int, chunk_size: int, with_state: bool) -> None:
    q, k, v, g, beta, state = _inputs(seq)
    initial = state if with_state else None
    o_ref, s_ref = gated_delta_rule(q, k, v, g, beta, initial_state=initial, form="recurrent")
    o, s = gated_delta_rule(q, k, v, g, beta, initial_state=initial, form="chunk", chunk_size=chunk_size)
    assert o.shape == (2, seq, 3, 12)
    assert s.shape == (2, 3, 8, 12)
    assert rel_err(o, o_ref) < TOL64
    assert rel_err(s, s_ref) < TOL64


def test_chunk_form_gradients_equal_recurrent_form() -> None:
    inputs = [t.requires_grad_() for t in _inputs(13)]
    weights = torch.randn(2, 13, 3, 12, dtype=torch.float64)

    def grads(form: str) -> tuple[torch.Tensor, ...]:
        o, s = gated_delta_rule(*inputs[:5], initial_state=inputs[5], form=form, chunk_size=4)
        return torch.autograd.grad((o * weights).sum() + s.sum(), inputs)

    for grad, ref in zip(grads("chunk"), grads("recurrent"), strict=True):
        assert rel_err(grad, ref) < 1e-10


def test_splitting_a_sequence_carries_the_state_exactly() -> None:
    q, k, v, g, beta, _ = _inputs(30)
    full, s_full = gated_delta_rule(q, k, v, g, beta, chunk_size=8)
    first, s_mid = gated_delta_rule(q[:, :11], k[:, :11], v[:, :11], g[:, :11], beta[:, :11], chunk_size=8)
    second, s_end = gated_delta_rule(
        q[:, 11:], k[:, 11:], v[:, 11:], g[:, 11:], beta[:, 11:], initial_state=s_mid, chunk_size=8
    )
    assert rel_err(torch.cat([first, second], dim=1), full) < TOL64
    assert rel_err(s_end, s_full) < TOL64


def test_delta_rule_with_orthonormal_keys_stores_and_overwrites_exactly() -> None:
    """With β = 1, no decay and orthonormal keys, reading key i returns the last value written under it: the
    delta rule replaces a stored association (plain linear attention would add the two values)."""
    dk, dv = 4, 3
    keys = torch.eye(dk, dtype=torch.float64)[[0, 1, 2, 0]]  # key 0 written twice
    values = torch.randn(4, dv, dtype=torch.float64)
    q = keys.clone()
    shape = (1, 4, 1)
    for form in ("recurrent", "chunk"):
        out, state = gated_delta_rule(
            q[None, :, None],
            keys[None, :, None],
            values[None, :, None],
            torch.zeros(shape, dtype=torch.float64),
            torch.ones(shape, dtype=torch.float64),
            scale=1.0,
            form=form,
            chunk_size=2,
        )
        memory = state[0, 0]  # (dk, dv)
        assert torch.allclose(memory[0], values[3], atol=1e-14)  # overwritten
        assert torch.allclose(memory[1], values[1], atol=1e-14)
        assert torch.allclose(memory[2], values[2], atol=1e-14)
        assert torch.allclose(memory[3], torch.zeros(dv, dtype=torch.float64), atol=1e-14)
        assert torch.allclose(out[0, :, 0], values, atol=1e-14)  # each read right after its write


def test_decay_forgets() -> None:
    q, k, v, g, beta, state = _inputs(5)
    _, kept = gated_delta_rule(q, k, v, torch.zeros_like(g), torch.zeros_like(beta), initial_state=state)
    _, decayed = gated_delta_rule(q, k, v, torch.full_like(g, -0.5), torch.zeros_like(beta), initial_state=state)
    assert torch.equal(kept, state)  # β = 0: nothing written; g = 0: nothing forgotten
    assert rel_err(decayed, state * math.exp(-2.5)) < TOL64


def test_agrees_with_transformers_qwen3_next_reference() -> None:
    """An independent implementation: transformers' pure-PyTorch gated delta rule of Qwen3-Next (same argument
    conventions as flash-linear-attention). It computes in float32 internally, hence the 1e-5 tolerance."""
    qwen3_next = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    q, k, v, g, beta, state = _inputs(37)
    ours, our_state = gated_delta_rule(q, k, v, g, beta, initial_state=state)
    for fn in (qwen3_next.torch_chunk_gated_delta_rule, qwen3_next.torch_recurrent_gated_delta_rule):
        theirs, their_state = fn(q, k, v, g, beta, initial_state=state, output_final_state=True)
        assert rel_err(ours, theirs) < 1e-5
        assert rel_err(our_state, their_state) < 1e-5


@pytest.mark.skipif(not (torch.cuda.is_available() and fla_available()), reason="needs CUDA and flash-linear-attention")
def test_fla_kernel_agrees_with_the_plain_pytorch_form() -> None:
    q, k, v, g, beta, state = _inputs(200, dtype=torch.float32, device="cuda")
    ours, our_state = gated_delta_rule(q, k, v, g, beta, initial_state=state, form="chunk")
    theirs, their_state = gated_delta_rule(q, k, v, g, beta, initial_state=state, form="fla")
    # float32 kernels with TF32 matmuls: ~1e-3 relative
    assert rel_err(theirs, ours) < 5e-3
    assert rel_err(their_state, our_state) < 5e-3


def test_bad_form_is_refused() -> None:
    q, k, v, g, beta, _ = _inputs(3)
    with pytest.raises(ValueError, match="form must be one of"):
        gated_delta_rule(q, k, v, g, beta, form="parallel")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            gated_delta_rule(q, k, v, g, beta, form="fla")


def test_layer_streams_through_its_cache() -> None:
    torch.manual_seed(0)
    layer = GatedDeltaNet(32, 2, 8, chunk_size=4).double()
    x = torch.randn(2, 21, 32, dtype=torch.float64)
    with torch.no_grad():
        full, _ = layer(x)
        cache, pieces, start = None, [], 0
        for n in [6, 1, 1, 9, 4]:
            y, cache = layer(x[:, start : start + n], cache)
            pieces.append(y)
            start += n
    assert rel_err(torch.cat(pieces, dim=1), full) < TOL64
    assert cache.state.shape == (2, 2, 8, 16)  # fixed size: (batch, heads, dk, 2 dk)
    # the gates are in range at init: decay in (0, 1), β in (0, 1)
    decay = torch.exp(-layer.A_log.exp() * F.softplus(layer.dt_bias))
    assert bool(((decay > 0) & (decay < 1)).all())


@pytest.mark.parametrize(("seq", "chunk_size"), [(7, 4), (8, 8)])
def test_chunk_form_gradcheck(seq: int, chunk_size: int) -> None:
    """The hand-written backward of the chunk form, every input and the initial state, with and without padding."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, seq, 2, 3, generator=g, dtype=torch.float64)
    k = F.normalize(torch.randn(1, seq, 2, 3, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(1, seq, 2, 4, generator=g, dtype=torch.float64)
    decay = -torch.rand(1, seq, 2, generator=g, dtype=torch.float64)
    beta = torch.rand(1, seq, 2, generator=g, dtype=torch.float64)
    state = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (q, k, v, decay, beta, state))

    def rule(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gated_delta_rule(*tensors[:5], initial_state=tensors[5], chunk_size=chunk_size)

    assert torch.autograd.gradcheck(rule, inputs)


@pytest.mark.parametrize("used", ["output", "state"])
def test_chunk_form_gradients_when_only_one_output_is_used(used: str) -> None:
    inputs = [t.requires_grad_() for t in _inputs(21)]

    def grads(form: str) -> tuple[torch.Tensor, ...]:
        o, s = gated_delta_rule(*inputs[:5], initial_state=inputs[5], form=form, chunk_size=8)
        # only the state: q gets no gradient (zeros; None from the recurrent form, hence materialize_grads)
        return torch.autograd.grad(o.sum() if used == "output" else s.pow(2).sum(), inputs, materialize_grads=True)

    for grad, ref in zip(grads("chunk"), grads("recurrent"), strict=True):
        assert rel_err(grad, ref) < 1e-10 if ref.any() else not grad.any()


def test_streamed_calls_have_the_gradients_of_one_call() -> None:
    inputs = [t.requires_grad_() for t in _inputs(30)]
    q, k, v, g, beta, state = inputs
    full, s_full = gated_delta_rule(q, k, v, g, beta, initial_state=state, chunk_size=8)
    first, s_mid = gated_delta_rule(q[:, :11], k[:, :11], v[:, :11], g[:, :11], beta[:, :11], initial_state=state)
    second, s_end = gated_delta_rule(
        q[:, 11:], k[:, 11:], v[:, 11:], g[:, 11:], beta[:, 11:], initial_state=s_mid, chunk_size=8
    )
    weights = torch.randn(full.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    once = torch.autograd.grad((full * weights).sum() + s_full.sum(), inputs)
    streamed = torch.autograd.grad((torch.cat([first, second], 1) * weights).sum() + s_end.sum(), inputs)
    for a, b in zip(streamed, once, strict=True):
        assert rel_err(a, b) < 1e-10
