"""Our Mamba-1 selective scan and the mixer built on it.

The chunk form against the op's token-by-token reference form (float64: values and every gradient, one call and
streamed calls), the reference against the recurrence written out here, the log-depth scan inside the chunk form,
gradcheck, its autograd graph, its input checks; the mixer against transformers' own ``MambaMixer`` on the same
weights; the mamba model's cache continued by calls of any length (split prefill = one call = token-by-token decode).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from baseline_testing import random_ids
from torch import Tensor
from transformers import DynamicCache, MambaConfig, MambaForCausalLM
from transformers.models.mamba.modeling_mamba import MambaMixer, MambaModel

from tttlm.models import build
from tttlm.models.ssm.cache import SSMCache
from tttlm.models.ssm.modeling import SelectiveScanMixer, library_cache_argument
from tttlm.ops.selective_scan import default_chunk_size, linear_scan_, selective_scan

# float64: the chunk form and the reference loop differ only in summation order (~1e-16 measured)
TOLERANCE = 1e-12
OPTIONAL = ("D", "z", "initial_state")


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


def _reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The op's reference form: h_t = exp(dt_t A) ⊙ h_{t−1} + dt_t x_t B_t, y_t = (h_t C_t + D x_t) silu(z_t), one
    token at a time under plain autograd."""
    return selective_scan(x, dt, A, B, C, D, z, initial_state, form="recurrent")


def _token_loop(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """The recurrence written out independently of the op (no D, no gate), to check the reference form itself."""
    ys = []
    for t in range(x.shape[-1]):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * x[:, :, t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    return torch.stack(ys, dim=-1), h


def _inputs(batch: int = 2, channels: int = 5, state: int = 3, seq: int = 13, seed: int = 0) -> dict[str, Tensor]:
    """Random float64 scan inputs requiring grad, with Mamba's signs (dt > 0, A < 0)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    tensors = {
        "x": randn(batch, channels, seq),
        "dt": F.softplus(randn(batch, channels, seq)),
        "A": -2 * torch.rand(channels, state, generator=g, dtype=torch.float64) - 0.1,
        "B": randn(batch, state, seq),
        "C": randn(batch, state, seq),
        "D": randn(channels),
        "z": randn(batch, channels, seq),
        "initial_state": randn(batch, channels, state),
    }
    return {name: t.requires_grad_() for name, t in tensors.items()}


# chunk sizes: one token, a divisor of T = 13 plus remainder, more than T, the default
@pytest.mark.parametrize("chunk_size", [1, 4, 64, None])
@pytest.mark.parametrize("optional", [OPTIONAL, ()], ids=["D-z-state", "bare"])
def test_scan_equals_the_token_loop(chunk_size: int | None, optional: tuple[str, ...]) -> None:
    inputs = {k: v for k, v in _inputs().items() if k not in OPTIONAL or k in optional}
    y, final = selective_scan(**inputs, chunk_size=chunk_size)
    y_ref, final_ref = _reference(**inputs)
    assert y.shape == (2, 5, 13)
    assert final.shape == (2, 5, 3)
    assert _rel(y, y_ref) < TOLERANCE
    assert _rel(final, final_ref) < TOLERANCE


def test_the_reference_form_is_the_written_out_recurrence() -> None:
    inputs = {k: v.detach() for k, v in _inputs().items()}
    y, final = selective_scan(**{k: v for k, v in inputs.items() if k not in ("D", "z")}, form="recurrent")
    args = [inputs[name] for name in ("x", "dt", "A", "B", "C", "initial_state")]
    y_loop, final_loop = _token_loop(*args)
    assert _rel(y, y_loop) < TOLERANCE
    assert _rel(final, final_loop) < TOLERANCE


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_linear_scan_equals_the_sequential_recurrence(reverse: bool) -> None:
    """The log-depth scan inside the chunk form, for every length up to 40 (powers of two and the rest)."""
    g = torch.Generator().manual_seed(4)
    for n in range(1, 41):
        u = torch.randn(n, 3, 5, generator=g, dtype=torch.float64)
        a = torch.rand(n, 3, 5, generator=g, dtype=torch.float64)
        expected = u.clone()
        if reverse:
            for t in range(n - 2, -1, -1):
                expected[t] += a[t + 1] * expected[t + 1]
        else:
            for t in range(1, n):
                expected[t] += a[t] * expected[t - 1]
        a_before, scanned = a.clone(), u.clone()
        linear_scan_(scanned, a, torch.full_like(a, float("nan")), reverse=reverse)
        assert torch.allclose(scanned, expected, rtol=1e-13, atol=1e-13), n
        assert torch.equal(a, a_before), n  # the decays are read only


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_gradients_of_every_input_equal_the_token_loop(chunk_size: int) -> None:
    inputs = _inputs()
    y, final = selective_scan(**inputs, chunk_size=chunk_size)
    y_ref, final_ref = _reference(**inputs)
    g = torch.Generator().manual_seed(1)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    d_final = torch.randn(final.shape, generator=g, dtype=torch.float64)
    # both outputs carry a cotangent: the final state's gradient flows back through the whole scan too
    ours = torch.autograd.grad((y * dy).sum() + (final * d_final).sum(), list(inputs.values()))
    ref = torch.autograd.grad((y_ref * dy).sum() + (final_ref * d_final).sum(), list(inputs.values()))
    for name, a, b in zip(inputs, ours, ref, strict=True):
        assert _rel(a, b) < TOLERANCE, name


@pytest.mark.parametrize("optional", [OPTIONAL, ()], ids=["D-z-state", "bare"])
def test_one_token_equals_the_token_loop_values_and_gradients(optional: tuple[str, ...]) -> None:
    # T = 1 (decoding) takes its own direct step
    inputs = {k: v for k, v in _inputs(seq=1).items() if k not in OPTIONAL or k in optional}
    y, final = selective_scan(**inputs)
    y_ref, final_ref = _reference(**inputs)
    assert y.shape == (2, 5, 1)
    assert _rel(y, y_ref) < TOLERANCE
    assert _rel(final, final_ref) < TOLERANCE
    # from a zero state, A has no effect (a zero gradient; None from our step, hence materialize_grads)
    ours = torch.autograd.grad(y.sum() + final.sum(), list(inputs.values()), materialize_grads=True)
    ref = torch.autograd.grad(y_ref.sum() + final_ref.sum(), list(inputs.values()))
    for name, a, b in zip(inputs, ours, ref, strict=True):
        assert _rel(a, b) < TOLERANCE if b.norm() > 0 else not a.any(), name


@pytest.mark.parametrize(("seq", "chunk_size"), [(5, 2), (11, 8)])
def test_gradcheck(seq: int, chunk_size: int) -> None:
    inputs = _inputs(batch=1, channels=2, state=2, seq=seq, seed=3)

    def scan(*tensors: Tensor) -> tuple[Tensor, Tensor]:
        return selective_scan(*tensors, chunk_size=chunk_size)

    assert torch.autograd.gradcheck(scan, tuple(inputs.values()))


@pytest.mark.parametrize(("form", "chunk_size"), [("chunk", None), ("chunk", 4), ("recurrent", None)])
def test_a_call_continues_from_the_state_of_the_previous_one(form: str, chunk_size: int | None) -> None:
    """Streaming: calls of 6, 1 and 6 tokens carrying the state = one call, values and gradients."""
    inputs = _inputs()
    y, final = selective_scan(**inputs, chunk_size=chunk_size, form=form)
    per_token = ("x", "dt", "B", "C", "z")
    state, pieces = inputs["initial_state"], []
    for start, stop in ((0, 6), (6, 7), (7, 13)):
        piece = {k: v[..., start:stop] if k in per_token else v for k, v in inputs.items()}
        y_piece, state = selective_scan(**{**piece, "initial_state": state}, chunk_size=chunk_size, form=form)
        pieces.append(y_piece)
    streamed = torch.cat(pieces, dim=-1)
    assert _rel(streamed, y) < TOLERANCE
    assert _rel(state, final) < TOLERANCE
    cotangent = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = torch.autograd.grad((streamed * cotangent).sum() + state.sum(), list(inputs.values()))
    once = torch.autograd.grad((y * cotangent).sum() + final.sum(), list(inputs.values()))
    for name, a, b in zip(inputs, ours, once, strict=True):
        assert _rel(a, b) < TOLERANCE, name


def _graph_size(output: Tensor) -> int:
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(parent for parent, _ in node.next_functions)
    return len(seen)


def test_the_backward_graph_does_not_grow_with_the_length() -> None:
    # one autograd node for the whole recurrence (its backward is a loop linear in T), unlike autograd through a
    # token loop, whose graph (and for transformers' indexing, each node's cost) grows with T
    sizes = {seq: _graph_size(selective_scan(**_inputs(seq=seq), chunk_size=4)[0]) for seq in (8, 64)}
    assert sizes[8] == sizes[64]


def test_bfloat16_inputs_are_scanned_in_float32() -> None:
    inputs = {k: v.detach() for k, v in _inputs().items()}
    y, final = selective_scan(**{k: v.bfloat16() for k, v in inputs.items()})
    assert y.dtype == final.dtype == torch.float32
    y_ref, _ = _reference(**{k: v.bfloat16().double() for k, v in inputs.items()})
    assert _rel(y.double(), y_ref) < 1e-5  # float32 rounding of the scan only


def test_default_chunk_size() -> None:
    assert default_chunk_size(8, 112, 16) == 32  # tiny preset, 8 sequences
    assert default_chunk_size(1, 1576, 16) == 16  # 125m preset, 1 sequence
    assert default_chunk_size(64, 4096, 16) == 8  # never below 8 tokens
    assert default_chunk_size(1, 1, 1) == 256  # never above 256


@pytest.mark.parametrize(
    ("name", "shape", "match"),
    [
        ("x", (2, 5), "x must be"),
        ("x", (2, 5, 0), "x must be"),
        ("A", (4, 3), "A must be"),
        ("dt", (2, 5, 12), "dt must have shape"),
        ("B", (2, 4, 13), "B must have shape"),
        ("C", (2, 3, 12), "C must have shape"),
        ("D", (5, 1), "D must have shape"),
        ("z", (1, 5, 13), "z must have shape"),
        ("initial_state", (2, 3, 5), "initial_state must have shape"),
    ],
)
def test_bad_shapes_are_refused(name: str, shape: tuple[int, ...], match: str) -> None:
    inputs = {k: v.detach() for k, v in _inputs().items()}
    inputs[name] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        selective_scan(**inputs)


def test_bad_form_is_refused() -> None:
    with pytest.raises(ValueError, match="form must be one of"):
        selective_scan(**_inputs(), form="parallel")


@pytest.mark.parametrize("chunk_size", [0, 1.5, True])
def test_bad_chunk_size_is_refused(chunk_size: object) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**_inputs(), chunk_size=chunk_size)  # type: ignore[arg-type]


# -- the mixer -----------------------------------------------------------------------------------------------------

# The library's float64 mixer is not all float64: it rounds A = −exp(A_log), D and the dt bias to float32, and its
# scan the inputs B and x too; we do not. Weights built in float32 make D and the bias exact; the rest moves the
# outputs by ~1e-12 (measured; the state part of the output is small at Mamba's dt ≤ 0.1), the final SSM state by
# ~1e-8 and, through those float32 casts, the gradients of A_log, D and the dt bias by ~1e-7 (relative).
MIXER_TOLERANCE = 1e-10
MIXER_STATE_TOLERANCE = 1e-6
MIXER_GRAD_TOLERANCE = 1e-6


def _mixers() -> tuple[MambaConfig, MambaMixer, SelectiveScanMixer]:
    config = MambaConfig(hidden_size=16, state_size=4, expand=2, conv_kernel=4, num_hidden_layers=1)
    torch.manual_seed(0)
    library = MambaMixer(config, layer_idx=0)
    ours = SelectiveScanMixer(config, layer_idx=0)
    ours.load_state_dict(library.state_dict())
    return config, library.double(), ours.double()


def _hidden(seq: int, seed: int = 2) -> Tensor:
    return torch.randn(2, seq, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_mixer_equals_the_library_mixer_forward_and_backward() -> None:
    _, library, ours = _mixers()
    hidden = _hidden(11).requires_grad_()
    out, ref = ours(hidden), library(hidden)
    assert _rel(out, ref) < MIXER_TOLERANCE
    cotangent = torch.randn_like(ref)
    inputs = [hidden, *ours.parameters()]
    grads = torch.autograd.grad((out * cotangent).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * cotangent).sum(), [hidden, *library.parameters()])
    names = ["hidden", *(name for name, _ in ours.named_parameters())]
    for name, a, b in zip(names, grads, ref_grads, strict=True):
        assert _rel(a, b) < MIXER_GRAD_TOLERANCE, name


def test_mixer_continues_a_cache_with_calls_of_any_length() -> None:
    config, library, ours = _mixers()
    hidden = _hidden(15)
    with torch.no_grad():
        # the library's one call, with a cache to compare the states it leaves (its single-token decode rounds the
        # state to float32, so it is not a float64 reference)
        cache = DynamicCache(config=config)
        full = library(hidden, **library_cache_argument(MambaMixer.forward, cache))
        ours_cache, pieces, start = DynamicCache(config=config), [], 0
        for n in (2, 1, 5, 3, 4):  # calls shorter and longer than the conv kernel
            pieces.append(ours(hidden[:, start : start + n], **library_cache_argument(MambaMixer.forward, ours_cache)))
            start += n
    assert _rel(torch.cat(pieces, dim=1), full) < MIXER_TOLERANCE
    assert _rel(ours_cache.get_recurrent_state(0), cache.get_recurrent_state(0)) < MIXER_STATE_TOLERANCE
    assert _rel(ours_cache.get_conv_state(0), cache.get_conv_state(0)) < TOLERANCE  # in_proj outputs


# -- the model -----------------------------------------------------------------------------------------------------


def test_model_uses_our_mixer_with_the_library_weights_and_init() -> None:
    torch.manual_seed(0)
    ours = build("mamba", "tiny")
    torch.manual_seed(0)
    library = MambaForCausalLM(ours.config)
    assert all(isinstance(layer.mixer, SelectiveScanMixer) for layer in ours.backbone.layers)
    ours_state, library_state = ours.state_dict(), library.state_dict()
    assert list(ours_state) == list(library_state)
    assert all(torch.equal(ours_state[k], library_state[k]) for k in ours_state)


def test_model_split_prefill_equals_one_call_and_token_by_token_decoding() -> None:
    # residual_in_fp32=False: the library's blocks would otherwise round the residual stream to float32
    torch.manual_seed(0)
    model = build("mamba", "tiny", residual_in_fp32=False).double().eval()
    ids = random_ids(2, 17)

    def hidden_in_pieces(lengths: list[int]) -> Tensor:
        cache, pieces, start = SSMCache(config=model.config), [], 0
        for n in lengths:
            pieces.append(
                model.backbone(
                    ids[:, start : start + n], **library_cache_argument(MambaModel.forward, cache), use_cache=True
                )[0]
            )
            start += n
        return torch.cat(pieces, dim=1)

    with torch.no_grad():
        full = model.backbone(ids, use_cache=False)[0]
        split = hidden_in_pieces([6, 2, 9])
        decoded = hidden_in_pieces([1] * 17)
    assert _rel(split, full) < TOLERANCE
    assert _rel(decoded, full) < TOLERANCE
