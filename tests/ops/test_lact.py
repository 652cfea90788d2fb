"""The LaCT op (``tttlm.ops.lact``): its forms agree, its update is autograd's gradient step, streaming equals
one-shot prefill, and bad inputs are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tttlm.ops.lact import LaCTState, lact_swiglu
from tttlm.ops.lact.update import NORM_EPS, chunk_gradients, newton_schulz, token_gradients

TOL = {"rtol": 1e-10, "atol": 1e-12}
# Newton-Schulz amplifies rounding (a chunk of one token gives a rank-one update): absolute 1e-10 there
MUON_TOL = {"rtol": 1e-10, "atol": 1e-10}
OPTIONS = [
    {"momentum": False, "use_muon": False},
    {"momentum": True, "use_muon": False},
    {"momentum": True, "use_muon": True},
    {"momentum": False, "use_muon": False, "weight_norm": False},
]
OPTION_IDS = ["plain", "momentum", "momentum-muon", "no-weight-norm"]


def make_inputs(batch: int = 2, seq: int = 21, heads: int = 2, d: int = 6, hidden: int = 5, momentum: bool = True):
    """Random float64 inputs shaped as the layer makes them: L2-normalised q, k; softplus lrs; sigmoid momentum."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k = (F.normalize(randn(batch, seq, heads, d), dim=-1) for _ in range(2))
    v = randn(batch, seq, heads, d)
    lr = F.softplus(randn(batch, seq, heads, 3) - 2)
    w0, w2 = randn(heads, hidden, d) / d**0.5, randn(heads, hidden, d) / d**0.5
    w1 = randn(heads, d, hidden) / hidden**0.5
    m = torch.sigmoid(randn(batch, seq, heads)) if momentum else None
    return q, k, v, lr, w0, w1, w2, m


def _run(inputs, options, **kwargs):
    options = dict(options)
    with_momentum = options.pop("momentum")
    *tensors, m = inputs
    return lact_swiglu(*tensors, m if with_momentum else None, **options, **kwargs)


def assert_states_close(a: LaCTState, b: LaCTState, tol: dict[str, float] = TOL) -> None:
    assert a.position == b.position
    for x, y in zip(a.weights + a.grad_sums + a.norms, b.weights + b.grad_sums + b.norms, strict=True):
        torch.testing.assert_close(x, y, **tol)
    assert (a.velocity is None) == (b.velocity is None)
    if a.velocity is not None:
        for x, y in zip(a.velocity, b.velocity, strict=True):
            torch.testing.assert_close(x, y, **tol)
        torch.testing.assert_close(a.momentum_sum, b.momentum_sum, **tol)


def by_autograd(inputs, chunk_size: int, momentum: bool, use_muon: bool, weight_norm: bool = True) -> Tensor:
    """LaCT's rule written from its definition, the gradient by torch.autograd: for each chunk, outputs at the
    current weights, then one step along the gradient of Σ_j lri_j ⟨f(k_j), v_j⟩ (momentum, Muon, norm)."""
    q, k, v, lr, *initial, m = inputs
    batch = q.shape[0]
    weights = [w.unsqueeze(0).expand(batch, *w.shape) for w in initial]
    norms = [w.norm(dim=-1, keepdim=True) for w in weights]
    velocity = [torch.zeros_like(w) for w in weights]
    outputs = []
    for s in range(0, q.shape[1], chunk_size):
        chunk = slice(s, s + chunk_size)
        w0, w1, w2 = weights
        outputs.append(
            torch.einsum(
                "bhdn,bthn->bthd",
                w1,
                F.silu(torch.einsum("bhnd,bthd->bthn", w0, q[:, chunk]))
                * torch.einsum("bhnd,bthd->bthn", w2, q[:, chunk]),
            )
        )
        if s + chunk_size > q.shape[1]:
            break
        leaves = [w.detach().requires_grad_() for w in weights]
        grads = []
        for i in range(3):
            a = torch.einsum("bhnd,bthd->bthn", leaves[0], k[:, chunk])
            b = torch.einsum("bhnd,bthd->bthn", leaves[2], k[:, chunk])
            f = torch.einsum("bhdn,bthn->bthd", leaves[1], F.silu(a) * b)
            objective = ((f * v[:, chunk]).sum(-1) * lr[:, chunk, :, i]).sum()
            grads.append(torch.autograd.grad(objective, leaves[i])[0])
        if momentum:
            coefficient = m[:, chunk].mean(dim=1)[..., None, None]
            grads = [g + coefficient * p for g, p in zip(grads, velocity, strict=True)]
            velocity = grads
        if use_muon:
            grads = [newton_schulz(g) for g in grads]
        weights = [w.detach() + g for w, g in zip(weights, grads, strict=True)]
        if weight_norm:
            weights = [w / (w.norm(dim=-1, keepdim=True) + NORM_EPS) * n for w, n in zip(weights, norms, strict=True)]
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 21, 32])
def test_chunk_form_equals_reference(options, chunk_size) -> None:
    inputs = make_inputs()
    o_chunk, s_chunk = _run(inputs, options, chunk_size=chunk_size, form="chunk")
    o_ref, s_ref = _run(inputs, options, chunk_size=chunk_size, form="reference")
    torch.testing.assert_close(o_chunk, o_ref, **(MUON_TOL if options["use_muon"] else TOL))
    assert_states_close(s_chunk, s_ref, MUON_TOL if options["use_muon"] else TOL)


def test_gradients_are_autograds() -> None:
    q, k, v, lr, w0, w1, w2, _ = make_inputs()
    weights = tuple(w.unsqueeze(0).expand(q.shape[0], *w.shape).clone().requires_grad_() for w in (w0, w1, w2))
    a = torch.einsum("bhnd,bthd->bthn", weights[0], k)
    b = torch.einsum("bhnd,bthd->bthn", weights[2], k)
    f = torch.einsum("bhdn,bthn->bthd", weights[1], F.silu(a) * b)
    dot = (f * v).sum(-1)  # (batch, seq, heads): ⟨f(k_j), v_j⟩, minus the loss of token j
    expected = [torch.autograd.grad((dot * lr[..., i]).sum(), weights[i], retain_graph=True)[0] for i in range(3)]
    for form in (chunk_gradients, token_gradients):
        for got, want in zip(form(k, v, lr, weights), expected, strict=True):
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("chunk_size", [4, 7])
def test_op_is_the_update_rule_by_autograd(options, chunk_size) -> None:
    inputs = make_inputs()
    o, _ = _run(inputs, options, chunk_size=chunk_size)
    torch.testing.assert_close(o, by_autograd(inputs, chunk_size, **options), **TOL)


def test_first_chunk_reads_the_initial_weights_only() -> None:
    """Apply, then update: changing a token's key and value changes nothing before the next chunk."""
    inputs = make_inputs(momentum=False)
    o, _ = _run(inputs, OPTIONS[0], chunk_size=8)
    q, k, v, *rest = inputs
    k2, v2 = k.clone(), v.clone()
    k2[:, 5], v2[:, 5] = k[:, 6], -v[:, 5]
    o2, _ = _run((q, k2, v2, *rest), OPTIONS[0], chunk_size=8)
    torch.testing.assert_close(o2[:, :8], o[:, :8], rtol=0, atol=0)
    assert not torch.allclose(o2[:, 8:], o[:, 8:])


def test_weight_norm_keeps_each_row_norm() -> None:
    inputs = make_inputs()
    _, state = _run(inputs, OPTIONS[1], chunk_size=4)
    for w, n in zip(state.weights, state.norms, strict=True):
        torch.testing.assert_close(w.norm(dim=-1, keepdim=True), n, rtol=1e-4, atol=0)  # up to the 1e-5 eps


def test_newton_schulz_approximately_orthogonalises() -> None:
    g = torch.randn(3, 5, 8, dtype=torch.float64)
    singular = torch.linalg.svdvals(newton_schulz(g))
    assert singular.min() > 0.5
    assert singular.max() < 1.3
    tall = torch.randn(3, 8, 5, dtype=torch.float64)
    torch.testing.assert_close(newton_schulz(tall), newton_schulz(tall.transpose(-1, -2)).transpose(-1, -2))


@pytest.mark.parametrize("options", OPTIONS[:3], ids=OPTION_IDS[:3])
@pytest.mark.parametrize("form", ["chunk", "reference"])
def test_streaming_equals_one_shot(options, form) -> None:
    inputs = make_inputs()
    o_full, s_full = _run(inputs, options, chunk_size=4, form=form)
    q, k, v, lr, w0, w1, w2, m = inputs
    for splits in ([21], [1] * 21, [3, 1, 8, 2, 7], [4, 4, 13]):
        state, outputs, start = None, [], 0
        for n in splits:
            part = slice(start, start + n)
            piece = (q[:, part], k[:, part], v[:, part], lr[:, part], w0, w1, w2, m[:, part])
            o, state = _run(piece, options, chunk_size=4, form=form, initial_state=state)
            outputs.append(o)
            start += n
        torch.testing.assert_close(torch.cat(outputs, dim=1), o_full, **TOL)
        assert_states_close(state, s_full)


def test_outer_gradients_agree_between_forms() -> None:
    inputs = [t.clone().requires_grad_() for t in make_inputs(seq=9)]
    grads = {}
    for form in ("chunk", "reference"):
        o, state = _run(inputs, OPTIONS[2], chunk_size=4, form=form)
        loss = (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() + sum(
            (w**2).sum() for w in state.weights
        )
        grads[form] = torch.autograd.grad(loss, inputs)
    for a, b in zip(grads["chunk"], grads["reference"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"form": "dual"}, "form must be one of"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
        ({"lr": torch.ones(2, 21, 2, 1, dtype=torch.float64)}, r"lr must have shape \(2, 21, 2, 3\)"),
        ({"w1": torch.ones(2, 6, 5)}, "w1 has dtype torch.float32 but q has torch.float64"),
        ({"momentum": torch.ones(2, 21, 3, dtype=torch.float64)}, r"momentum must have shape \(2, 21, 2\)"),
    ],
)
def test_bad_inputs_are_refused(change, message) -> None:
    q, k, v, lr, w0, w1, w2, m = make_inputs()
    args = {"q": q, "k": k, "v": v, "lr": lr, "w0": w0, "w1": w1, "w2": w2, "momentum": m, **change}
    with pytest.raises((TypeError, ValueError), match=message):
        lact_swiglu(**args)


def test_a_state_must_match_the_call() -> None:
    q, k, v, lr, w0, w1, w2, m = make_inputs()
    _, state = lact_swiglu(q, k, v, lr, w0, w1, w2, m, chunk_size=8)
    with pytest.raises(ValueError, match="initial_state was made with momentum"):
        lact_swiglu(q, k, v, lr, w0, w1, w2, None, chunk_size=8, initial_state=state)
    with pytest.raises(ValueError, match="not fewer than chunk_size=4"):
        lact_swiglu(q, k, v, lr, w0, w1, w2, m, chunk_size=4, initial_state=state)
