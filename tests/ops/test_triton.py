"""``form="triton"``: the fused Triton kernels equal the PyTorch forms; on CPU through Triton's interpreter.

Without a CUDA GPU, ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports triton (it must come
first: importing tttlm imports triton) and the kernels run on CPU tensors through the interpreter, which executes
each program with numpy on whole tiles. That checks the kernels' arithmetic, masking and state handling, not
GPU-only behaviour (``tl.dot`` precision modes, shared memory, scheduling); ``test_kernels_compile_for_gpus``
compiles them for real GPUs (sm_90) to cubin, which needs no GPU. With a CUDA GPU the same tests run the kernels
on it. References are always the PyTorch forms on the CPU.

Tolerances. The kernels compute in float32 whatever the input dtype. References are the dual form in float64
on the same (rounded) inputs:
- float32 inputs: relative error (‖a − b‖ / ‖b‖) <= 1e-5 for outputs, states and every gradient. Unit roundoff
  is 6e-8; the errors grow with the few hundred terms of each mini-batch's sums and the LayerNorm's 1/σ, and
  measure 1e-7 … 2e-6 under the interpreter (the PyTorch dual form in float32 is no better).
- float16 / bfloat16 inputs: the outputs, states and gradients are rounded to the input dtype on return, an
  error of up to one unit roundoff u (2^-11, 2^-8) per entry; the bound is 2u (measured: 0.5u … 0.9u).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[test]' brings it)")

from ttt_testing import TTTInputs, Variant, assert_rel_close, make_inputs, state_as_leaves  # noqa: E402

from tttlm.layers import TTTMLP, TTTLinear  # noqa: E402
from tttlm.ops import TTTState, kernel_forms, ttt_linear  # noqa: E402
from tttlm.ops.ttt_mlp import triton as mlp_triton  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip(
        "no CUDA GPU and TRITON_INTERPRET is not 1 (tests/conftest.py sets it when no GPU is present, unless the "
        "environment sets it otherwise)",
        allow_module_level=True,
    )
if INTERPRET and isinstance(triton.language.zeros, triton.runtime.jit.JITFunction):
    pytest.skip(
        "TRITON_INTERPRET=1 was set after triton had been imported, so the interpreter cannot run; set it in the "
        "environment (tests/conftest.py does so when it is loaded first)",
        allow_module_level=True,
    )
DEVICE = "cpu" if INTERPRET else "cuda"


FP32_TOL = 1e-5
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}

LINEAR = Variant("linear")
VARIANTS = [
    LINEAR,
    Variant("linear", bias=False),
    Variant("linear", ln=False),
    Variant("linear", bias=False, ln=False),
    Variant("mlp"),
    Variant("mlp", ln=False),
]
IDS = [v.id for v in VARIANTS]


def cast(inputs: TTTInputs, dtype: torch.dtype, device: str = DEVICE) -> TTTInputs:
    """The same inputs in ``dtype`` (rounded when narrower) on ``device`` (the kernels' by default)."""

    def to(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=dtype)

    return dataclasses.replace(
        inputs,
        q=to(inputs.q),
        k=to(inputs.k),
        v=to(inputs.v),
        lr=to(inputs.lr),
        params=tuple(to(p) for p in inputs.params),
        ln_weight=to(inputs.ln_weight),
        ln_bias=to(inputs.ln_bias),
        token_offset=to(inputs.token_offset),
    )


def run_with_grads(
    inputs: TTTInputs, form: str, split: int | None = None
) -> tuple[list[torch.Tensor], TTTState, dict[str, torch.Tensor]]:
    """Run the op (in two calls when ``split`` is given, the second continuing from the first's state), then
    back-propagate fixed random cotangents of every output and of the final state.

    Returns the outputs, the final state and the gradient of every input tensor."""
    leaves = inputs.as_leaves()
    if split is None:
        z, state = leaves.run(form)
        outputs = [z]
    else:
        z1, mid = leaves.run(form, stop=split)
        z2, state = leaves.run(form, start=split, initial_state=mid)
        outputs = [torch.cat([z1, z2], dim=1)]  # the same cotangent as for one call
    random_projection([*outputs, *state.weights, *state.grad_sums]).backward()
    return outputs, state, {name: t.grad for name, t in leaves.named_tensors().items()}


def random_projection(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A scalar loss: the sum of each tensor times fixed random cotangents (the same for every form)."""
    gen = torch.Generator().manual_seed(1)
    return sum(
        (t.double() * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)).sum() for t in tensors
    )


def rel_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, msg: str = "") -> None:
    """``assert_rel_close`` in float64 on the CPU (the kernels' results may be on the GPU)."""
    assert_rel_close(actual.detach().cpu().double(), expected.detach().cpu().double(), tol, msg=msg)


def assert_all_close(actual: list[torch.Tensor], expected: list[torch.Tensor], tol: float, what: str) -> None:
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, f"{what} {i}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        rel_close(a, e, tol, msg=f"{what} {i}")


def assert_states_close(actual: TTTState, expected: TTTState, tol: float) -> None:
    assert actual.position == expected.position
    assert_all_close(list(actual.weights), list(expected.weights), tol, "state weight")
    # grad_sums are exactly zero at a mini-batch boundary: compare absolutely then
    if expected.position == 0:
        assert all(not g.any() for g in actual.grad_sums)
    else:
        assert_all_close(list(actual.grad_sums), list(expected.grad_sums), tol, "state grad_sum")


# ------------------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize(("b", "seq", "d"), [(8, 20, 32), (16, 37, 64)], ids=["b8-T20-d32", "b16-T37-d64"])
def test_forward_matches_dual(variant: Variant, b: int, seq: int, d: int) -> None:
    """Outputs and final state equal the dual form's; T is not a multiple of b (the last mini-batch stays open)."""
    inputs = make_inputs(variant, seq=seq, dim=d, mini_batch_size=b, seed=seq + d)
    z_ref, state_ref = inputs.run("dual")
    with torch.no_grad():
        z, state = cast(inputs, torch.float32).run("triton")
    assert z.dtype == torch.float32
    assert_all_close([z], [z_ref], FP32_TOL, "z")
    assert_states_close(state, state_ref, FP32_TOL)


@pytest.mark.parametrize("b", [1, 12, 32, 64])
def test_mini_batch_sizes(b: int) -> None:
    """Any b up to 64 (tiles of the next power of two >= 16, masked), including b = 1 and b not a power of 2."""
    inputs = make_inputs(LINEAR, seq=b + 3, dim=16, mini_batch_size=b, seed=b)
    z_ref, state_ref = inputs.run("dual")
    with torch.no_grad():
        z, state = cast(inputs, torch.float32).run("triton")
    assert_all_close([z], [z_ref], FP32_TOL, "z")
    assert_states_close(state, state_ref, FP32_TOL)


def test_head_dim_128() -> None:
    inputs = make_inputs(LINEAR, batch=1, heads=1, seq=10, dim=128, mini_batch_size=8)
    z_ref, state_ref = inputs.run("dual")
    with torch.no_grad():
        z, state = cast(inputs, torch.float32).run("triton")
    assert_all_close([z], [z_ref], FP32_TOL, "z")
    assert_states_close(state, state_ref, FP32_TOL)


# ---------------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_gradients_match_dual(variant: Variant) -> None:
    """∂/∂ every input (q, k, v, lr, the initial inner weights, the inner LayerNorm, token_offset)."""
    inputs = make_inputs(variant, seq=21, dim=32, mini_batch_size=8, seed=3)
    outputs_ref, state_ref, grads_ref = run_with_grads(inputs, "dual")
    outputs, state, grads = run_with_grads(cast(inputs, torch.float32), "triton")
    assert_all_close(outputs, outputs_ref, FP32_TOL, "z")
    assert_states_close(state, state_ref, FP32_TOL)
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        assert grad is not None, f"no gradient for {name}"
        rel_close(grad, grads_ref[name], FP32_TOL, msg=f"d/d{name}")


@pytest.mark.parametrize("op", ["linear", "mlp"])
@pytest.mark.parametrize("split", [5, 8, 20], ids=["open-mb", "at-boundary", "last-token"])
def test_continuation_from_initial_state(op: str, split: int) -> None:
    """Two calls, the second from the first's state (also inside an open mini-batch, and a single last token
    with gradients, which takes the chunked kernel), equal one dual call, gradients through both calls included."""
    inputs = make_inputs(Variant(op), seq=21, dim=16, mini_batch_size=8, seed=split)
    outputs_ref, state_ref, grads_ref = run_with_grads(inputs, "dual")
    outputs, state, grads = run_with_grads(cast(inputs, torch.float32), "triton", split=split)
    assert_all_close(outputs, outputs_ref, FP32_TOL, "z")
    assert_states_close(state, state_ref, FP32_TOL)
    for name, grad in grads.items():
        rel_close(grad, grads_ref[name], FP32_TOL, msg=f"d/d{name}")


# ------------------------------------------------------------------------------------- TTT-MLP backward kernel


@pytest.fixture
def mlp_backward_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the launches of TTT-MLP's backward kernel (so that a test fails if its gradients came another way)."""
    calls: list[int] = []
    launch = mlp_triton._backward

    def counted(*args: object) -> object:
        calls.append(1)
        return launch(*args)

    monkeypatch.setattr(mlp_triton, "_backward", counted)
    return calls


@pytest.mark.parametrize("ln", [True, False], ids=["ln", "noln"])
@pytest.mark.parametrize(("batch", "seq", "d"), [(1, 16, 16), (2, 19, 32)], ids=["B1-T16-d16", "B2-T19-d32"])
def test_mlp_backward_kernel(ln: bool, batch: int, seq: int, d: int, mlp_backward_calls: list[int]) -> None:
    """``_mlp_bwd_kernel``'s ∂/∂ every input (q, k, v, lr, W1, b1, W2, b2, the inner LayerNorm, token_offset)
    equal the dual form's: two whole mini-batches of 8, and two plus a partial third (the last stays open, so
    the cotangents of the returned sums enter too). 2 heads, h = 4d."""
    inputs = make_inputs(Variant("mlp", ln=ln), batch=batch, seq=seq, dim=d, mini_batch_size=8, seed=seq + d)
    _, _, grads_ref = run_with_grads(inputs, "dual")
    _, _, grads = run_with_grads(cast(inputs, torch.float32), "triton")
    assert mlp_backward_calls == [1]
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        rel_close(grad, grads_ref[name], FP32_TOL, msg=f"d/d{name}")


@pytest.mark.parametrize("ln", [True, False], ids=["ln", "noln"])
@pytest.mark.parametrize("seq", [13, 4], ids=["to-boundary", "inside-first-mb"])
def test_mlp_backward_kernel_from_open_state(ln: bool, seq: int, mlp_backward_calls: list[int]) -> None:
    """Starting 3 tokens into a mini-batch (an initial state with pending sums): ∂/∂ the initial weights, the
    pending sums and every input equal the dual form's; the call ends at a boundary (3 + 13 = 16) or inside the
    mini-batch it started in (3 + 4 = 7: the first mini-batch is also the open last one)."""
    position = 3
    inputs = make_inputs(Variant("mlp", ln=ln), seq=position + seq, dim=16, mini_batch_size=8, seed=seq)
    _, state = inputs.run("dual", stop=position)
    grads = {}
    for form, dtype in (("dual", torch.float64), ("triton", torch.float32)):
        leaves = cast(inputs, dtype).as_leaves()
        weights, sums = (tuple(t.to(DEVICE, dtype) for t in ts) for ts in (state.weights, state.grad_sums))
        initial = state_as_leaves(TTTState(weights, sums, position))
        z, final = leaves.run(form, start=position, initial_state=initial)
        random_projection([z, *final.weights, *final.grad_sums]).backward()
        # the op's initial-weight parameters are not read when an initial state is given
        named = {name: t for name, t in leaves.named_tensors().items() if not name.startswith(("weight", "bias"))}
        named |= {f"W{i}": w for i, w in enumerate(initial.weights)}
        named |= {f"S{i}": g for i, g in enumerate(initial.grad_sums)}
        grads[form] = {name: t.grad for name, t in named.items()}
    assert mlp_backward_calls == [1]
    for name, grad in grads["triton"].items():
        rel_close(grad, grads["dual"][name], FP32_TOL, msg=f"d/d{name}")


# ------------------------------------------------------------------------------------------------- half inputs


@pytest.mark.parametrize("op", ["linear", "mlp"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_inputs(op: str, dtype: torch.dtype) -> None:
    """16-bit inputs, float32 inside: within 2 unit roundoffs of the float64 result on the same rounded inputs."""
    low = cast(make_inputs(Variant(op), seq=21, dim=32, mini_batch_size=8, seed=7), dtype)
    outputs_ref, state_ref, grads_ref = run_with_grads(cast(low, torch.float64, "cpu"), "dual")
    outputs, state, grads = run_with_grads(low, "triton")
    tol = 2 * UNIT_ROUNDOFF[dtype]
    assert outputs[0].dtype == dtype
    assert all(w.dtype == dtype for w in state.weights)
    assert_all_close(outputs, outputs_ref, tol, "z")
    assert_states_close(state, state_ref, tol)
    for name, grad in grads.items():
        assert grad.dtype == dtype
        rel_close(grad, grads_ref[name], tol, msg=f"d/d{name}")


# ------------------------------------------------------------------------------------------------------- decode


@pytest.mark.parametrize("variant", [LINEAR, Variant("linear", bias=False), Variant("mlp")], ids=lambda v: v.id)
def test_decode_step_matches_step_form(variant: Variant) -> None:
    """Prefill 5 tokens with the chunked kernel, then decode one token per call (the fused step kernel) across
    two mini-batch boundaries; outputs and states equal the step form's."""
    reference = cast(make_inputs(variant, seq=14, dim=32, mini_batch_size=4, seed=11), torch.float32, "cpu")
    inputs = cast(reference, torch.float32)
    z_ref, state_ref = reference.run("step")
    with torch.no_grad():
        z, state = inputs.run("triton", stop=5)
        outputs = [z]
        for t in range(5, inputs.seq):
            z, state = inputs.run("triton", start=t, stop=t + 1, initial_state=state)
            outputs.append(z)
            _, expected = reference.run("step", stop=t + 1)
            assert_states_close(state, expected, FP32_TOL)
    assert_all_close([torch.cat(outputs, dim=1)], [z_ref], FP32_TOL, "z")
    assert_states_close(state, state_ref, FP32_TOL)


# ------------------------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("layer_cls", [TTTLinear, TTTMLP])
def test_layer_with_triton_form(layer_cls: type) -> None:
    """A TTT layer built with form="triton" equals the same layer with form="dual", prefill and decode."""
    torch.manual_seed(0)
    reference = layer_cls(64, 2, mini_batch_size=8)
    layer = layer_cls(64, 2, mini_batch_size=8, form="triton").to(DEVICE)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(2, 11, 64)
    y, cache = layer(x[:, :10].to(DEVICE))
    y_ref, cache_ref = reference(x[:, :10])
    rel_close(y, y_ref, FP32_TOL, msg="prefill")
    with torch.no_grad():
        y, _ = layer(x[:, 10:].to(DEVICE), cache)
        y_ref, _ = reference(x[:, 10:], cache_ref)
    rel_close(y, y_ref, FP32_TOL, msg="decode")


def test_language_model_with_triton_form() -> None:
    """TTTForCausalLM (tiny preset, TTT-MLP, Mamba backbone) with ttt_form="triton": the dual form's loss and
    gradients; "auto" is dual on a CPU."""
    from tttlm.models import TTTConfig, TTTForCausalLM

    torch.manual_seed(0)
    config = TTTConfig.from_preset("tiny", layer_type="mlp", backbone="mamba", ttt_form="triton")
    reference = TTTForCausalLM(TTTConfig.from_preset("tiny", layer_type="mlp", backbone="mamba"))
    model = TTTForCausalLM(config).to(DEVICE)
    model.load_state_dict(reference.state_dict())
    ids = torch.randint(config.vocab_size, (2, 21))
    loss, loss_ref = model(ids.to(DEVICE), labels=ids.to(DEVICE)).loss, reference(ids, labels=ids).loss
    loss.backward()
    loss_ref.backward()
    rel_close(loss, loss_ref, FP32_TOL, msg="loss")
    # both sides are float32 here (the layer runs its op in float32; the kernels refuse float64): the gradient as
    # a whole agrees to 1e-5; single small ones summed over many terms with cancellation (e.g. ∂/∂token_offset,
    # 1e-4 measured) carry the reference's own rounding, hence 1e-3 each
    grads = [
        (name, p.grad.cpu().double(), q.grad.double())
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True)
    ]
    assert_rel_close(
        torch.cat([g.flatten() for _, g, _ in grads]), torch.cat([g.flatten() for *_, g in grads]), FP32_TOL
    )
    for name, grad, grad_ref in grads:
        assert_rel_close(grad, grad_ref, 1e-3, msg=f"d/d{name}")
    assert TTTConfig.from_preset("tiny", ttt_form="auto").ttt_form == "auto"


# ------------------------------------------------------------------------------------------------------- errors


def small_linear_args(**overrides: object) -> dict[str, object]:
    inputs = cast(make_inputs(LINEAR, seq=5, dim=16, mini_batch_size=4), torch.float32, "cpu")
    args: dict[str, object] = {
        "q": inputs.q,
        "k": inputs.k,
        "v": inputs.v,
        "lr": inputs.lr,
        "weight": inputs.params[0],
        "bias": inputs.params[1],
        "ln_weight": inputs.ln_weight,
        "ln_bias": inputs.ln_bias,
        "mini_batch_size": 4,
    }
    args.update(overrides)
    return args


def test_clear_error_without_gpu_or_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU tensors without the interpreter: the error says what is needed and what was found."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match=r"form='triton' needs a CUDA GPU or TRITON_INTERPRET=1; got tensors on cpu"):
        ttt_linear(**small_linear_args(form="triton"))
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET unset"):
        ttt_linear(**small_linear_args(form="triton"))


def test_clear_error_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without triton installed: the same error for "triton" (on a GPU too); "auto" runs the dual form."""
    monkeypatch.setattr(kernel_forms, "triton_installed", lambda: False)
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU or TRITON_INTERPRET=1; got triton is not installed"):
        ttt_linear(**small_linear_args(form="triton"))
    z_auto, _ = ttt_linear(**small_linear_args(form="auto"))  # "auto" falls back silently
    assert torch.equal(z_auto, ttt_linear(**small_linear_args(form="dual"))[0])


def test_auto_is_dual_on_cpu() -> None:
    """Even with the interpreter on, "auto" picks the kernels only for CUDA tensors."""
    assert kernel_forms.resolve_kernel_form("auto", torch.zeros(1, 1, 1, 16), 4) == "dual"
    z_auto, state_auto = ttt_linear(**small_linear_args(form="auto"))
    z_dual, state_dual = ttt_linear(**small_linear_args(form="dual"))
    assert torch.equal(z_auto, z_dual)
    assert all(torch.equal(a, b) for a, b in zip(state_auto.weights, state_dual.weights, strict=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dtype": torch.float64}, "dtype torch.float64"),
        ({"dim": 24}, "head dim 24"),
    ],
)
def test_unsupported_inputs(overrides: dict[str, object], message: str) -> None:
    inputs = make_inputs(LINEAR, seq=5, dim=overrides.get("dim", 16), mini_batch_size=4)
    inputs = cast(inputs, overrides.get("dtype", torch.float32))
    with pytest.raises(ValueError, match=message):
        inputs.run("triton")
    inputs.run("auto")  # falls back to dual


def test_mini_batch_above_64_is_refused() -> None:
    inputs = cast(make_inputs(LINEAR, seq=5, dim=16, mini_batch_size=65), torch.float32)
    with pytest.raises(ValueError, match="mini_batch_size 65"):
        inputs.run("triton")


# ---------------------------------------------------------------------------------------------- GPU compilation

_COMPILE_SCRIPT = Path(__file__).with_name("triton_compile.py")


def test_kernels_compile_for_gpus() -> None:
    """Compile every kernel for sm_90 (Triton -> PTX -> cubin with the bundled ptxas; no GPU needed).

    The interpreter runs the kernels as Python, so it cannot catch what only the compiler checks (types across
    branches, layouts, shared memory); this does, in a subprocess without TRITON_INTERPRET."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, str(_COMPILE_SCRIPT)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode == 3:
        pytest.skip(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout + result.stderr
