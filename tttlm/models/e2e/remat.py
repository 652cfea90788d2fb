"""``remat(fn, args, params)``: ``fn(*args)`` whose activations are recomputed in the backward, as ``jax.remat``.

The TTT-E2E release rematerialises every step of its inner loop. ``torch.utils.checkpoint`` does not fit such a
step: the step itself back-propagates (the inner gradient), and its non-reentrant form then recomputes the step
inside the forward to serve that inner backward (its "backward inside checkpoint" rule) and keeps tensors of it
alive, while its reentrant form runs the forward without autograd. Here the forward runs ``fn`` with autograd on,
keeps nothing but its inputs and detached outputs, and the backward runs ``fn`` again and differentiates the
recomputed outputs with respect to the tensor inputs and ``params`` (the parameters ``fn`` reads), so the
gradients reach the parameters whether the caller uses ``backward`` or ``autograd.grad``; the recomputation runs
under the forward's autocast. The backward is first
order (``once_differentiable``): nothing differentiates the outer gradient again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils._pytree import tree_flatten, tree_unflatten

_TENSOR = object()  # marks where a tensor goes in the rebuilt output
_AUTOCAST = ("cpu", "cuda")  # the autocast states a recomputation restores


class _Remat(torch.autograd.Function):
    """``fn(*inputs)`` over flat tensors: ``apply(fn, n_inputs, *inputs, *params) -> outputs`` (a tuple)."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[..., list[Tensor]], n_inputs: int, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.fn, ctx.n_inputs = fn, n_inputs
        on = [device for device in _AUTOCAST if torch.is_autocast_enabled(device)]
        ctx.autocast = [(device, torch.get_autocast_dtype(device)) for device in on]
        ctx.save_for_backward(*tensors)
        ctx.set_materialize_grads(False)  # an output nobody used gets no zero gradient of its size
        with torch.enable_grad():
            outputs = fn(*_leaves(tensors[:n_inputs]))
        return tuple(o.detach() for o in outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grad_outputs: Tensor | None) -> tuple[Tensor | None, ...]:
        tensors = ctx.saved_tensors
        inputs = _leaves(tensors[: ctx.n_inputs])
        with ExitStack() as autocast, torch.enable_grad():
            # the recomputation runs as the forward did (the engine runs the backward outside its autocast)
            for device, dtype in ctx.autocast:
                autocast.enter_context(torch.autocast(device, dtype=dtype))
            outputs = ctx.fn(*inputs)
        used = [(o, g) for o, g in zip(outputs, grad_outputs, strict=True) if g is not None and o.requires_grad]
        wrt = [t for t in (*inputs, *tensors[ctx.n_inputs :]) if t.requires_grad]
        grads = iter(
            torch.autograd.grad([o for o, _ in used], wrt, [g for _, g in used], allow_unused=True) if used else []
        )
        every = [next(grads, None) if t.requires_grad else None for t in (*inputs, *tensors[ctx.n_inputs :])]
        return None, None, *every


def _leaves(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Detached copies that keep ``requires_grad``: the recomputed graph starts at them."""
    return [t.detach().requires_grad_(t.requires_grad) for t in tensors]


def remat(fn: Callable[..., Any], args: Sequence[Any], params: Sequence[Tensor]) -> Any:
    """``fn(*args)``, its inside recomputed in the backward instead of kept.

    Args:
        fn: returns a pytree (tuples, lists, named tuples) of tensors and plain values (e.g. a cache position); it
            must compute the same from the same inputs (no randomness).
        args: its arguments, a pytree whose tensors are the inputs differentiated (others are passed as they are).
        params: the parameters ``fn`` reads besides ``args`` (those that require grad get gradients).

    Returns:
        what ``fn`` returns; its tensors come out of one autograd node.
    """
    leaves, spec = tree_flatten(list(args))
    where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
    structure: dict[str, Any] = {}

    def flat_fn(*tensors: Tensor) -> list[Tensor]:
        filled = list(leaves)
        for i, tensor in zip(where, tensors, strict=True):
            filled[i] = tensor
        out_leaves, out_spec = tree_flatten(fn(*tree_unflatten(filled, spec)))
        if not structure:  # the forward's run; keep no tensor here (it would keep its graph alive)
            structure["spec"] = out_spec
            structure["plain"] = [_TENSOR if isinstance(leaf, Tensor) else leaf for leaf in out_leaves]
        return [leaf for leaf in out_leaves if isinstance(leaf, Tensor)]

    params = [p for p in params if p.requires_grad]
    outputs = iter(_Remat.apply(flat_fn, len(where), *(leaves[i] for i in where), *params))
    # the plain values from the forward's run, the tensors from the node
    rebuilt = [next(outputs) if leaf is _TENSOR else leaf for leaf in structure["plain"]]
    return tree_unflatten(rebuilt, structure["spec"])
