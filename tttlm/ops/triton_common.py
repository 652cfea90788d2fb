"""Shared pieces of the Triton TTT kernels: launch settings and the on-chip helpers both ops' kernels use
(mini-batch tile addressing, tanh-GELU and its first two derivatives, LayerNorm, the fused LayerNorm-L2
gradient, the dual form's η matrix) together with the adjoints their backward kernels share (output LayerNorm +
residual, the LayerNorm-L2 gradient, η).

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
def minibatch_tile(m, P0, T, seq0, H, hi, rows, cols, MB: tl.constexpr, D: tl.constexpr):
    """Where mini-batch ``m``'s [BB, D] tile of a (B, T, H, D) tensor lies, for the program of (batch, head hi).

    The stream starts at position P0 inside mini-batch 0. Returns (valid [BB]: rows inside the mini-batch and
    the stream, tok [BB]: (batch, t, head) indices (the offsets into (B, T, H) tensors), offsets [BB, D])."""
    t = m * MB - P0 + rows
    valid = (rows < MB) & (t >= 0) & (t < T)
    tok = (seq0 + t) * H + hi
    return valid, tok, tok[:, None] * D + cols[None, :]


@triton.jit
def load_inner_norm(lnw_ptr, lnb_ptr, hi, cols, D: tl.constexpr, HAS_NORM: tl.constexpr):
    """γ and β (D,) of head ``hi``'s inner LayerNorm in float32; zeros for an op without one."""
    gamma = tl.zeros([D], tl.float32)
    beta = tl.zeros([D], tl.float32)
    if HAS_NORM:
        gamma = tl.load(lnw_ptr + hi * D + cols).to(tl.float32)
        beta = tl.load(lnb_ptr + hi * D + cols).to(tl.float32)
    return gamma, beta


@triton.jit
def load_step_scales(scale_ptr, rows, MB: tl.constexpr):
    """The step scales ``max(1/i + δ_i, 0)`` of the mini-batch rows (zero past b) and the last one's."""
    scale = tl.load(scale_ptr + rows, mask=rows < MB, other=0.0)
    last_scale = tl.load(scale_ptr + MB - 1)
    return scale, last_scale


@triton.jit
def load_minibatch(q_ptr, k_ptr, v_ptr, lr_ptr, m, P0, T, seq0, H, hi, rows, cols, MB: tl.constexpr, D: tl.constexpr):
    """Mini-batch ``m``'s tile (see ``minibatch_tile``) and its Q, K, V (float32, zero rows outside) and lr."""
    valid, tok, offs = minibatch_tile(m, P0, T, seq0, H, hi, rows, cols, MB, D)
    Q = load_tile(q_ptr, offs, valid)
    K = load_tile(k_ptr, offs, valid)
    V = load_tile(v_ptr, offs, valid)
    lr = tl.load(lr_ptr + tok, mask=valid, other=0.0).to(tl.float32)
    return valid, tok, offs, Q, K, V, lr


@triton.jit
def load_tile(ptr, offs, valid):
    """A [BB, D] tile in float32; rows outside the stream are zeros."""
    return tl.load(ptr + offs, mask=valid[:, None], other=0.0).to(tl.float32)


@triton.jit
def tanh(x):
    """tanh from one exp, without overflow (exp of a non-positive argument)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


# tanh-GELU: gelu(x) = ½ x (1 + tanh u), u = c (x + a x³), c = sqrt(2/π), a = 0.044715; u' = c (1 + 3a x²)
# (0.134145 = 3a; 0.10703222440890037 = 3ac, from u'' = 6ac x).


@triton.jit
def gelu_tanh(x):
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@triton.jit
def gelu_tanh_grad(x):
    """gelu' = ½ (1 + t) + ½ x (1 − t²) u', t = tanh u."""
    t = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)


@triton.jit
def gelu_tanh_grad2(x):
    """gelu'' = (1 − t²) (u' + 3ac x² − x t u'²): differentiating ½ (1 + t) and ½ x (1 − t²) u' once more."""
    t = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
    du = 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    return (1.0 - t * t) * (du + 0.10703222440890037 * x * x - x * t * du * du)


@triton.jit
def normalize_rows(x, D: tl.constexpr, eps):
    """(x̂, 1/σ) per row of x [R, D]: x̂ = (x − mean)/σ, σ = sqrt(biased var + eps)."""
    mean = tl.sum(x, axis=1) / D
    centred = x - mean[:, None]
    inv_std = tl.rsqrt(tl.sum(centred * centred, axis=1) / D + eps)
    return centred * inv_std[:, None], inv_std


@triton.jit
def project_rows(u, x_hat, D: tl.constexpr):
    """``u − mean(u) − x̂ mean(u x̂)`` per row: the LayerNorm backward without its 1/σ factor (a symmetric map)."""
    return u - (tl.sum(u, axis=1) / D)[:, None] - x_hat * (tl.sum(u * x_hat, axis=1) / D)[:, None]


@triton.jit
def ln_l2_grad_parts(x, target, gamma, beta, D: tl.constexpr, eps):
    """Gradient G of ½‖LN(x) − target‖² w.r.t. x, per row, with what its adjoint needs.

    G = P(ĝ) / σ with ĝ = r γ, r = γ x̂ + β − target and P = ``project_rows``. x, target: [R, D];
    gamma, beta: [D]. Returns (G, x̂, 1/σ, r, P(ĝ))."""
    x_hat, inv_std = normalize_rows(x, D, eps)
    resid = gamma[None, :] * x_hat + beta[None, :] - target
    proj = project_rows(resid * gamma[None, :], x_hat, D)
    return proj * inv_std[:, None], x_hat, inv_std, resid, proj


@triton.jit
def ln_l2_grad(x, target, gamma, beta, D: tl.constexpr, eps):
    """Gradient of ½‖LN(x) − target‖² w.r.t. x, per row; gamma, beta: [D]."""
    grad, _, _, _, _ = ln_l2_grad_parts(x, target, gamma, beta, D, eps)
    return grad


@triton.jit
def ln_l2_grad_backward(dG, x_hat, inv_std, resid, proj, gamma, D: tl.constexpr):
    """Adjoint of ``ln_l2_grad_parts`` for the cotangent dG [R, D] of G, from its saved (x̂, 1/σ, r, P(ĝ)).

    G = P_x̂(ĝ)/σ depends on x through x̂ (in ĝ = (γ x̂ + β − target) γ and in the projection P_x̂ itself) and
    through 1/σ; a cotangent of x̂ reaches x through the LayerNorm backward P_x̂(·)/σ. Returns
    (∂/∂x [R, D], ∂/∂target [R, D], ∂/∂γ [D], ∂/∂β [D]), the last two summed over rows."""
    g_hat = resid * gamma[None, :]
    d_g_hat = project_rows(dG, x_hat, D) * inv_std[:, None]  # P is symmetric
    mean_gx = tl.sum(g_hat * x_hat, axis=1) / D
    mean_dgx = tl.sum(dG * x_hat, axis=1) / D
    d_x_hat = (
        d_g_hat * (gamma * gamma)[None, :] - (inv_std * mean_gx)[:, None] * dG - (inv_std * mean_dgx)[:, None] * g_hat
    )
    d_inv_std = tl.sum(dG * proj, axis=1)
    dx = project_rows(d_x_hat, x_hat, D) * inv_std[:, None] - (inv_std * inv_std * d_inv_std / D)[:, None] * x_hat
    d_gamma = tl.sum(d_g_hat * (resid + gamma[None, :] * x_hat), axis=0)
    d_beta = tl.sum(d_g_hat * gamma[None, :], axis=0)
    return dx, -d_g_hat * gamma[None, :], d_gamma, d_beta


@triton.jit
def ln_residual(q, z, gamma, beta, D: tl.constexpr, eps):
    """The learner's output ``q + LN(z)`` per row."""
    z_hat, _ = normalize_rows(z, D, eps)
    return q + gamma[None, :] * z_hat + beta[None, :]


@triton.jit
def ln_residual_backward(d_out, z, gamma, D: tl.constexpr, eps):
    """Adjoint of ``ln_residual`` w.r.t. z for the cotangent d_out [R, D] (∂/∂q is d_out itself).

    Returns (∂/∂z [R, D], ∂/∂γ [D], ∂/∂β [D]), the last two summed over rows."""
    z_hat, inv_std = normalize_rows(z, D, eps)
    dz = project_rows(d_out * gamma[None, :], z_hat, D) * inv_std[:, None]
    return dz, tl.sum(d_out * z_hat, axis=0), tl.sum(d_out, axis=0)


@triton.jit
def tril_mask(rows):
    return rows[:, None] >= rows[None, :]


@triton.jit
def eta(A, scale, lr, tril):
    """The dual form's η ⊙ A: ``tril(scale_i A_ij lr_j)`` [BB, BB]; scale, lr: [BB]."""
    return tl.where(tril, scale[:, None] * A * lr[None, :], 0.0)


@triton.jit
def eta_backward(dE, A, scale, lr):
    """Adjoint of ``eta`` for a cotangent dE already zero above the diagonal: (∂/∂A, ∂/∂scale, ∂/∂lr)."""
    dEA = dE * A
    return dE * scale[:, None] * lr[None, :], tl.sum(dEA * lr[None, :], axis=1), tl.sum(dEA * scale[:, None], axis=0)
