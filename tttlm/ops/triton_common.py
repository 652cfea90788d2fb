"""Shared pieces of the Triton TTT kernels: on-chip helpers (LayerNorm, its fused L2 gradient, tanh-GELU),
launch settings, and the PyTorch backward that recomputes one mini-batch at a time.

Imported only by ``tttlm/ops/ttt_linear/triton.py`` and ``tttlm/ops/ttt_mlp/triton.py``, which are themselves
imported lazily (``tttlm.ops.kernel_forms``): ``import tttlm`` works without triton.

Conventions of every kernel: one program per (batch, head); the mini-batch is a tile of ``BB`` rows (the next
power of two >= max(b, 16), since ``tl.dot`` needs dims >= 16); rows outside the stream (before the start
position of an open mini-batch, after the last token, or beyond b) are loaded as zeros with learning rate 0, so
they add nothing to the state, and are never stored. Everything on chip is float32 whatever the input dtype.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from tttlm.ops.inner_norm import layer_norm
from tttlm.ops.scan import ChunkFn

# Triton decorates kernels for the interpreter or for the GPU when they are defined (at import of this module).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
# ... and so it did its own helpers (tl.zeros, tl.sum, ...) when triton was first imported: the interpreter only
# works if TRITON_INTERPRET=1 was already set then (importing tttlm imports triton: transformers -> torch._dynamo).
_STDLIB_INTERPRETED = not isinstance(tl.zeros, triton.runtime.jit.JITFunction)

# How tl.dot treats its float32 operands (all of them: tiles are float32 on chip) on tensor cores. "tf32x3" (three
# TF32 products) keeps float32 accuracy (the inner state accumulates over the whole sequence); "tf32" (2^-11) is
# enough for bfloat16 inputs, whose own rounding (2^-8) dominates, not for float16 ones (2^-11 too).
# "ieee" avoids tensor cores altogether.
DOT_PRECISION = {torch.float32: "tf32x3", torch.float16: "tf32x3", torch.bfloat16: "tf32"}


def dot_precision(dtype: torch.dtype) -> str:
    return DOT_PRECISION[dtype]


def row_block(mini_batch_size: int) -> int:
    """Rows of the mini-batch tile: the next power of two >= max(b, 16)."""
    return max(16, triton.next_power_of_2(mini_batch_size))


def num_warps(head_dim: int) -> int:
    """Warps per program of the TTT-Linear kernels (from compiling for sm_90: 4 warps spill at d = 64)."""
    return 8 if head_dim >= 64 else 4


def check_launchable(x: Tensor) -> None:
    """Raise when the kernels were defined for another backend than the tensors need."""
    if x.device.type == "cpu" and not INTERPRETED:
        raise RuntimeError(
            "form='triton' on CPU tensors needs TRITON_INTERPRET=1 set before the triton kernels are first "
            "imported; they were imported without it (set the variable in the environment of the program)"
        )
    if INTERPRETED and not _STDLIB_INTERPRETED:
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton had been imported (importing tttlm or transformers imports "
            "it), so triton.language is bound to the GPU compiler; set the variable in the environment of the "
            "program, before any import"
        )


def needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def fp32(t: Tensor | None) -> Tensor | None:
    """A float32 contiguous copy (or the tensor itself when it already is one)."""
    return None if t is None else t.to(torch.float32).contiguous()


def num_minibatches(seq: int, position: int, mini_batch_size: int) -> int:
    """Mini-batches touched by ``seq`` tokens starting at ``position`` inside the first one."""
    return -(-(position + seq) // mini_batch_size)


# ---------------------------------------------------------------------------------------------- on-chip helpers


@triton.jit
def tanh(x):
    """tanh from one exp, without overflow (exp of a non-positive argument)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def gelu_tanh(x):
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@triton.jit
def gelu_tanh_grad(x):
    t = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)


@triton.jit
def normalize_rows(x, D: tl.constexpr, eps):
    """(x̂, 1/σ) per row of x [R, D]: x̂ = (x − mean)/σ, σ = sqrt(biased var + eps)."""
    mean = tl.sum(x, axis=1) / D
    centred = x - mean[:, None]
    inv_std = tl.rsqrt(tl.sum(centred * centred, axis=1) / D + eps)
    return centred * inv_std[:, None], inv_std


@triton.jit
def project_rows(u, x_hat, D: tl.constexpr):
    """``u − mean(u) − x̂ mean(u x̂)`` per row: the LayerNorm backward without its 1/σ factor."""
    return u - (tl.sum(u, axis=1) / D)[:, None] - x_hat * (tl.sum(u * x_hat, axis=1) / D)[:, None]


@triton.jit
def ln_l2_grad(x, target, gamma, beta, D: tl.constexpr, eps):
    """Gradient of ½‖LN(x) − target‖² w.r.t. x, per row; gamma, beta: [D]."""
    x_hat, inv_std = normalize_rows(x, D, eps)
    grad_x_hat = (gamma[None, :] * x_hat + beta[None, :] - target) * gamma[None, :]
    return project_rows(grad_x_hat, x_hat, D) * inv_std[:, None]


@triton.jit
def ln_residual(q, z, gamma, beta, D: tl.constexpr, eps):
    """The learner's output ``q + LN(z)`` per row."""
    z_hat, _ = normalize_rows(z, D, eps)
    return q + gamma[None, :] * z_hat + beta[None, :]


@triton.jit
def tril_mask(rows):
    return rows[:, None] >= rows[None, :]


# -------------------------------------------------------------------------- backward by per-mini-batch recompute


def recompute_backward(
    chunk_fn: ChunkFn,
    inputs: tuple[Tensor, Tensor, Tensor, Tensor],
    scale: Tensor,
    norm: tuple[Tensor, Tensor] | None,
    checkpoints: tuple[Tensor, ...],
    pending: tuple[Tensor, ...] | None,
    position: int,
    mini_batch_size: int,
    eps: float,
    grad_z: Tensor,
    grad_weights: tuple[Tensor, ...],
    grad_sums: tuple[Tensor, ...],
) -> tuple[list[Tensor], Tensor, tuple[Tensor, Tensor] | None, tuple[Tensor, ...], tuple[Tensor, ...] | None]:
    """Backward of a whole-sequence TTT op from the per-mini-batch states its forward saved.

    Walks the mini-batches last to first; each is recomputed in PyTorch (``chunk_fn``, float32, the dual form)
    from its saved start state and differentiated on its own, so at most one mini-batch's autograd graph is
    alive at a time.

    inputs: (q, k, v, lr) as given to the op, (B, T, H, d) and (B, T, H). scale: (b,) float32 step scales.
    norm: float32 (ln_weight, ln_bias) (H, d) or None. checkpoints: per inner weight, float32
    (B, H, n_mb, *shape) — the state at the start of each mini-batch (vectors stored as (B, H, n_mb, 1, dim)).
    pending: float32 sums of the mini-batch opened by an earlier call (None when position == 0).
    grad_z: ∂L/∂z (B, T, H, d); grad_weights / grad_sums: ∂L/∂ the returned final state.

    Returns ([dq, dk, dv, dlr] in float32, dscale, (dln_weight, dln_bias) or None, ∂L/∂ initial weights,
    ∂L/∂ initial pending sums or None).
    """
    seq = inputs[0].shape[1]
    grads_in = [torch.zeros(x.shape, dtype=torch.float32, device=x.device) for x in inputs]
    d_scale = torch.zeros_like(scale)
    d_norm = None if norm is None else [torch.zeros_like(norm[0]), torch.zeros_like(norm[1])]
    carry = tuple(g.to(torch.float32) for g in grad_weights)
    d_pending = None
    n_mb = checkpoints[0].shape[2]
    for m in reversed(range(n_mb)):
        start, end = max(0, m * mini_batch_size - position), min(seq, (m + 1) * mini_batch_size - position)
        first = position if m == 0 else 0
        close = (m + 1) * mini_batch_size <= position + seq
        chunk = [x[:, start:end].transpose(1, 2).to(torch.float32).detach().requires_grad_() for x in inputs]
        weights = tuple(c[:, :, m].detach().requires_grad_() for c in checkpoints)
        pend = None
        if m == 0 and pending is not None:
            pend = tuple(p.detach().requires_grad_() for p in pending)
        scale_leaf = scale.detach().requires_grad_()
        norm_leaves = None if norm is None else tuple(n.detach().requires_grad_() for n in norm)
        with torch.enable_grad():
            chunk_norm = None if norm_leaves is None else (norm_leaves[0].unsqueeze(1), norm_leaves[1].unsqueeze(1))
            n = end - start
            z, new_weights, new_sums = chunk_fn(
                *chunk, scale_leaf[first : first + n], weights, pend, close, chunk_norm, eps
            )
            if chunk_norm is not None:
                z = chunk[0] + layer_norm(z, chunk_norm[0], chunk_norm[1], eps)
        outputs, out_grads = [z], [grad_z[:, start:end].transpose(1, 2).to(torch.float32)]
        if close:
            outputs += list(new_weights)
            out_grads += list(carry)
        else:  # only the last mini-batch can be open: its weights pass through, its sums are returned
            outputs += list(new_sums)
            out_grads += [g.to(torch.float32) for g in grad_sums]
        leaves = [*chunk, *weights, *(pend or ()), scale_leaf, *(norm_leaves or ())]
        grads = torch.autograd.grad(outputs, leaves, out_grads, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves, strict=True)]
        for full, g in zip(grads_in, grads[:4], strict=True):
            full[:, start:end] = g.transpose(1, 2)
        i = 4
        new_carry = grads[i : i + len(weights)]
        if not close:
            new_carry = [g + c for g, c in zip(new_carry, carry, strict=True)]
        carry = tuple(new_carry)
        i += len(weights)
        if pend is not None:
            d_pending = tuple(grads[i : i + len(pend)])
            i += len(pend)
        d_scale += grads[i]
        if d_norm is not None:
            d_norm[0] += grads[i + 1]
            d_norm[1] += grads[i + 2]
    return grads_in, d_scale, None if d_norm is None else (d_norm[0], d_norm[1]), carry, d_pending
