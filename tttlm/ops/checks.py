"""Input validation shared by the TTT ops: every message names the argument, what it got and what it needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from tttlm.ops.state import TTTState


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_tensor(name: str, t: object, shape: Sequence[int], like: Tensor, check_finite: bool) -> None:
    """Raise TypeError/ValueError unless ``t`` is a tensor of ``shape`` with ``like``'s dtype and device."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if _shape(t) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {_shape(t)}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but q has {like.dtype}; cast all inputs to one float dtype")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but q is on {like.device}; move all inputs to one device")
    if check_finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values; check the inputs that produced it")


def check_ttt_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    inner_params: Callable[[int, int], Mapping[str, tuple[Tensor | None, Sequence[int]]]],
    *,
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    token_offset: Tensor | None,
    mini_batch_size: int,
    initial_state: TTTState | None,
    check_finite: bool,
) -> None:
    """Validate the arguments of a TTT op (see ``tttlm.ops.ttt_linear`` for their meaning); the form is
    validated by ``forms.canonical_form``.

    ``inner_params(heads, d)`` maps each inner-weight argument name to (the tensor, or None for an absent
    optional one; its required shape). It is called once q is known to be a valid (batch, seq, heads, d) tensor.
    """
    if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be an integer >= 1; got {mini_batch_size!r}")
    if not isinstance(q, Tensor):
        raise TypeError(f"q must be a torch.Tensor; got {type(q).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q must have shape (batch, seq, heads, head_dim); got {_shape(q)}")
    if not q.is_floating_point():
        raise TypeError(f"q must be a floating-point tensor; got {q.dtype}")
    batch, seq, heads, _ = q.shape
    if seq == 0:
        raise ValueError("q has an empty sequence (seq = 0); pass at least one token")
    check_tensor("q", q, q.shape, q, check_finite)
    check_tensor("k", k, q.shape, q, check_finite)
    check_tensor("v", v, q.shape, q, check_finite)
    check_tensor("lr", lr, (batch, seq, heads), q, check_finite)
    params = inner_params(heads, q.shape[-1])
    for name, (tensor, shape) in params.items():
        if tensor is not None:
            check_tensor(name, tensor, shape, q, check_finite)
    if (ln_weight is None) != (ln_bias is None):
        raise ValueError("ln_weight and ln_bias must both be tensors (inner LayerNorm) or both None (no norm)")
    if ln_weight is not None:
        check_tensor("ln_weight", ln_weight, (heads, q.shape[-1]), q, check_finite)
        check_tensor("ln_bias", ln_bias, (heads, q.shape[-1]), q, check_finite)
    if token_offset is not None:
        check_tensor("token_offset", token_offset, (mini_batch_size,), q, check_finite)
    if initial_state is not None:
        check_state(initial_state, params, batch, mini_batch_size, q)


def check_state(
    state: object,
    params: Mapping[str, tuple[Tensor | None, Sequence[int]]],
    batch: int,
    mini_batch_size: int,
    like: Tensor,
) -> None:
    """Validate a carried ``TTTState`` against the inner weights it must match."""
    if not isinstance(state, TTTState):
        raise TypeError(f"initial_state must be a TTTState (as returned by the op); got {type(state).__name__}")
    if not 0 <= state.position < mini_batch_size:
        raise ValueError(
            f"initial_state.position must be in [0, mini_batch_size={mini_batch_size}); got {state.position}; "
            "was the state produced with another mini_batch_size?"
        )
    present = [(name, shape) for name, (tensor, shape) in params.items() if tensor is not None]
    if len(state.weights) != len(present) or len(state.grad_sums) != len(present):
        raise ValueError(
            f"initial_state holds {len(state.weights)} weight tensors but this op has {len(present)} "
            f"({', '.join(n for n, _ in present)}); was it produced by another op or with another bias setting?"
        )
    for (name, shape), w, g in zip(present, state.weights, state.grad_sums, strict=True):
        expected = (batch, shape[0], 1, shape[1]) if len(shape) == 2 else (batch, *shape)
        check_tensor(f"initial_state weight {name}", w, expected, like, False)
        check_tensor(f"initial_state grad_sum {name}", g, expected, like, False)
