"""Bad inputs raise ValueError/TypeError naming the argument (no assert, no deep torch error)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from ttt_testing import Variant, make_inputs

from tttlm.ops import TTTState, ttt_linear, ttt_mlp

B, T, H, D, MB = 2, 6, 2, 4, 4


def linear_args(**changes: Any) -> dict[str, Any]:
    inputs = make_inputs(Variant("linear"), batch=B, seq=T, heads=H, dim=D, mini_batch_size=MB)
    args = {
        "q": inputs.q,
        "k": inputs.k,
        "v": inputs.v,
        "lr": inputs.lr,
        "weight": inputs.params[0],
        "bias": inputs.params[1],
        "ln_weight": inputs.ln_weight,
        "ln_bias": inputs.ln_bias,
        "token_offset": inputs.token_offset,
        "mini_batch_size": MB,
    }
    args.update(changes)
    return args


def mlp_args(**changes: Any) -> dict[str, Any]:
    inputs = make_inputs(Variant("mlp"), batch=B, seq=T, heads=H, dim=D, mini_batch_size=MB)
    args = {
        "q": inputs.q,
        "k": inputs.k,
        "v": inputs.v,
        "lr": inputs.lr,
        "weight1": inputs.params[0],
        "bias1": inputs.params[1],
        "weight2": inputs.params[2],
        "bias2": inputs.params[3],
        "ln_weight": inputs.ln_weight,
        "ln_bias": inputs.ln_bias,
        "token_offset": inputs.token_offset,
        "mini_batch_size": MB,
    }
    args.update(changes)
    return args


def names(arg: str) -> str:
    """A regex matching ``arg`` as a whole word (so "k" does not match inside "check")."""
    return rf"(?<![\w]){re.escape(arg)}(?![\w])"


def f64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def test_valid_arguments_pass() -> None:
    """The base arguments the cases below corrupt are valid."""
    z, _ = ttt_linear(**linear_args())
    assert z.shape == (B, T, H, D)
    z, _ = ttt_mlp(**mlp_args())
    assert z.shape == (B, T, H, D)


BAD_LINEAR = {
    "q 3-D": ({"q": f64(B, T, H * D)}, ValueError, "q"),
    "q 1-D": ({"q": f64(D)}, ValueError, "q"),
    "q not a tensor": ({"q": [[1.0]]}, TypeError, "q"),
    "q integer": ({"q": torch.ones(B, T, H, D, dtype=torch.int64)}, TypeError, "q"),
    "k shape": ({"k": f64(B, T + 1, H, D)}, ValueError, "k"),
    "v shape": ({"v": f64(B, T, H, D + 1)}, ValueError, "v"),
    "k not a tensor": ({"k": None}, TypeError, "k"),
    "k float32": ({"k": torch.randn(B, T, H, D)}, TypeError, "k"),
    "lr float32": ({"lr": torch.rand(B, T, H)}, TypeError, "lr"),
    "lr shape 4-D": ({"lr": torch.rand(B, T, H, 1, dtype=torch.float64)}, ValueError, "lr"),
    "lr shape heads": ({"lr": torch.rand(B, T, H + 1, dtype=torch.float64)}, ValueError, "lr"),
    "weight shape": ({"weight": f64(H, D, D + 1)}, ValueError, "weight"),
    "weight heads": ({"weight": f64(H + 1, D, D)}, ValueError, "weight"),
    "bias shape": ({"bias": f64(H, D, 1)}, ValueError, "bias"),
    "ln_weight shape": ({"ln_weight": f64(D)}, ValueError, "ln_weight"),
    "ln_bias missing": ({"ln_bias": None}, ValueError, "ln_bias"),
    "ln_weight missing": ({"ln_weight": None}, ValueError, "ln_weight"),
    "token_offset length": ({"token_offset": f64(MB + 1)}, ValueError, "token_offset"),
    "token_offset length vs b": ({"mini_batch_size": MB + 2}, ValueError, "token_offset"),
    "token_offset float32": ({"token_offset": torch.zeros(MB)}, TypeError, "token_offset"),
    "empty sequence": (
        {k: torch.zeros(B, 0, H, D, dtype=torch.float64) for k in "qkv"}
        | {"lr": torch.zeros(B, 0, H, dtype=torch.float64)},
        ValueError,
        "q",
    ),
    "mini_batch_size 0": ({"mini_batch_size": 0}, (ValueError, TypeError), "mini_batch_size"),
    "mini_batch_size -1": ({"mini_batch_size": -1}, (ValueError, TypeError), "mini_batch_size"),
    "mini_batch_size 2.5": ({"mini_batch_size": 2.5}, (ValueError, TypeError), "mini_batch_size"),
    "mini_batch_size True": ({"mini_batch_size": True}, (ValueError, TypeError), "mini_batch_size"),
    "mini_batch_size str": ({"mini_batch_size": "4"}, (ValueError, TypeError), "mini_batch_size"),
    "unknown form": ({"form": "fast"}, ValueError, "form"),
    "initial_state not a TTTState": ({"initial_state": ((), (), 0)}, TypeError, "initial_state"),
}


@pytest.mark.parametrize(("changes", "error", "arg"), BAD_LINEAR.values(), ids=BAD_LINEAR.keys())
def test_ttt_linear_rejects(changes: dict[str, Any], error: type[Exception], arg: str) -> None:
    with pytest.raises(error, match=names(arg)):
        ttt_linear(**linear_args(**changes))


BAD_MLP = {
    "weight1 shape": ({"weight1": f64(H, D + 1, 4 * D)}, ValueError, "weight1"),
    "bias1 shape": ({"bias1": f64(H, 4 * D + 1)}, ValueError, "bias1"),
    "weight2 hidden mismatch": ({"weight2": f64(H, 4 * D + 1, D)}, ValueError, "weight2"),
    "bias2 shape": ({"bias2": f64(H, D + 1)}, ValueError, "bias2"),
    "weight2 float32": ({"weight2": torch.randn(H, 4 * D, D)}, TypeError, "weight2"),
    "bias1 None": ({"bias1": None}, TypeError, "bias1"),
    "k shape": ({"k": f64(B, T, H, D + 1)}, ValueError, "k"),
    "q 1-D": ({"q": f64(D)}, ValueError, "q"),
    "q not a tensor": ({"q": None}, TypeError, "q"),
    "unknown form": ({"form": "fast"}, ValueError, "form"),
    "mini_batch_size 0": ({"mini_batch_size": 0}, (ValueError, TypeError), "mini_batch_size"),
}


@pytest.mark.parametrize(("changes", "error", "arg"), BAD_MLP.values(), ids=BAD_MLP.keys())
def test_ttt_mlp_rejects(changes: dict[str, Any], error: type[Exception], arg: str) -> None:
    with pytest.raises(error, match=names(arg)):
        ttt_mlp(**mlp_args(**changes))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("arg", ["v", "k", "lr", "weight", "ln_bias", "token_offset"])
def test_check_finite(arg: str, bad: float) -> None:
    args = linear_args()
    tensor = args[arg].clone()
    tensor.view(-1)[0] = bad
    args[arg] = tensor
    with pytest.raises(ValueError, match=names(arg)):
        ttt_linear(**args, check_finite=True)
    z, _ = ttt_linear(**args)  # not checked by default: no error, the non-finite value propagates
    assert not torch.isfinite(z).all()


def test_check_finite_passes_finite_inputs() -> None:
    z, _ = ttt_linear(**linear_args(), check_finite=True)
    assert torch.isfinite(z).all()


def test_initial_state_position_out_of_range() -> None:
    _, state = ttt_linear(**linear_args(mini_batch_size=6, token_offset=f64(6)))
    assert state.position == 0
    _, state = ttt_linear(**linear_args(mini_batch_size=8, token_offset=f64(8)))
    assert state.position == 6
    with pytest.raises(ValueError, match=names("initial_state")):  # produced with b = 8, used with b = 4
        ttt_linear(**linear_args(initial_state=state))
    at_b = TTTState(state.weights, state.grad_sums, MB)
    with pytest.raises(ValueError, match=names("initial_state")):
        ttt_linear(**linear_args(initial_state=at_b))
    negative = TTTState(state.weights, state.grad_sums, -1)
    with pytest.raises(ValueError, match=names("initial_state")):
        ttt_linear(**linear_args(initial_state=negative))


def test_state_from_mlp_rejected_by_linear() -> None:
    _, state = ttt_mlp(**mlp_args())
    with pytest.raises(ValueError, match=names("initial_state")):
        ttt_linear(**linear_args(initial_state=state))
    _, linear_state = ttt_linear(**linear_args())
    with pytest.raises(ValueError, match=names("initial_state")):
        ttt_mlp(**mlp_args(initial_state=linear_state))


def test_state_with_other_bias_setting_rejected() -> None:
    _, state = ttt_linear(**linear_args(bias=None))
    with pytest.raises(ValueError, match=names("initial_state")):
        ttt_linear(**linear_args(initial_state=state))


def test_state_with_other_batch_or_dtype_rejected() -> None:
    _, state = ttt_linear(**linear_args())
    smaller = TTTState(tuple(w[:1] for w in state.weights), tuple(g[:1] for g in state.grad_sums), 0)
    with pytest.raises(ValueError, match=names("initial_state")):
        ttt_linear(**linear_args(initial_state=smaller))
    single = TTTState(tuple(w.float() for w in state.weights), tuple(g.float() for g in state.grad_sums), 0)
    with pytest.raises(TypeError, match=names("initial_state")):
        ttt_linear(**linear_args(initial_state=single))


@pytest.mark.parametrize("arg", ["k", "weight", "ln_weight"])
def test_mismatched_device(arg: str) -> None:
    """A tensor on another device (the 'meta' device stands in for a GPU) is rejected by name."""
    args = linear_args()
    args[arg] = args[arg].to("meta")
    with pytest.raises(ValueError, match=names(arg)):
        ttt_linear(**args)


def test_error_messages_say_what_was_given() -> None:
    with pytest.raises(ValueError, match=r"\(2, 7, 2, 4\)"):
        ttt_linear(**linear_args(k=f64(B, T + 1, H, D)))
    with pytest.raises(ValueError, match="'fast'"):
        ttt_linear(**linear_args(form="fast"))
    with pytest.raises(ValueError, match=r"2\.5"):
        ttt_linear(**linear_args(mini_batch_size=2.5))
