"""Selective scan (S6, the recurrence of Mamba-1) in plain PyTorch: linear time forward and backward, any start state.

Per batch row, channel d ∈ [0, D) and state index n ∈ [0, N), with step sizes dt_t > 0 (already through bias and
softplus), a decay rate A (D, N) (negative in Mamba), input-dependent B_t, C_t ∈ R^N and input x_t ∈ R^D:

    h_t = exp(dt_t A) ⊙ h_{t−1} + dt_t x_t B_t          h ∈ R^{D×N}, h_0 = initial_state (zeros if absent)
    y_t = h_t C_t + D ⊙ x_t                             then y_t ← y_t ⊙ silu(z_t) with a gate z

How. Time is cut into chunks of L tokens. Inside a chunk the discretised tensors a_t = exp(dt_t A) and
u_t = dt_t x_t B_t are built with a few batched ops on an (L, B, N, D) block (channels innermost: long contiguous
rows), the recurrence runs one fused in-place ``addcmul`` per token on a (B, N, D) slice, and the outputs are one
batched matmul per chunk. The blocks are allocated once per call and reused by every chunk. The forward keeps only the
state at the start of each chunk; the backward (hand-written, one autograd node for the whole scan) recomputes a
chunk's states from it, so memory is O(B·D·N·(L + T/L)), not the O(B·D·N·T) of autograd through the recurrence, and
runs the adjoint recurrence backwards in time,

    g_t = C_t dy_tᵀ + a_{t+1} ⊙ g_{t+1}                 g_t = ∂loss/∂h_t (D×N), g_T = ∂loss/∂h_final + C_T dy_Tᵀ

from which every gradient is a per-token product, again batched per chunk:

    ∂(dt_t A) = g_t ⊙ h_{t−1} ⊙ a_t      ∂u_t = g_t      ∂C_t = h_tᵀ dy_t      ∂h_0 = a_1 ⊙ g_1

Each token costs O(D·N) forward and backward, so the scan is linear in T. transformers' pure-PyTorch fallback indexes
the (B, D, T, N) tensors token by token under autograd, and the backward of each index writes a whole-sequence zero
tensor: quadratic. Measured on one CPU thread (float32, process time, forward + backward of the scan alone): 0.1 s
at B·D·N·T = 8·112·16·1024 (the tiny preset), 0.07 s at 1·1576·16·512 (125m). Not used: the log-space chunk form
(a chunk's states from cumulative sums of dt·A, only exp of non-positive differences): A differs per (d, n), so it
needs a (B, D, N, L, L) tensor per chunk, L times the memory and arithmetic per token of the form here, whose only
extra cost is one small Python-level op per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

# Elements of one (L, B, N, D) work block: large enough that the per-chunk batched ops amortise their Python
# overhead, small enough that a chunk's blocks stay in the CPU caches. Measured (float32, 1 thread, forward+backward):
# flat within ±10 % from 2^18 to 2^20 at the tiny (B·D·N = 8·112·16) and 125m (1·1576·16) presets, and 8 tokens
# beat 32 by 12 % at 8·1576·16 (T = 2048), where even 8 tokens exceed the target.
CHUNK_ELEMENTS = 1 << 19


def default_chunk_size(batch: int, channels: int, state_size: int) -> int:
    """Tokens per chunk: the largest power of two in [8, 256] whose (L, B, N, D) block holds at most
    ``CHUNK_ELEMENTS`` elements (8 if none does)."""
    per_token = max(1, batch * channels * state_size)
    size = 8
    while size < 256 and 2 * size * per_token <= CHUNK_ELEMENTS:
        size *= 2
    return size


def _chunk_states(h: Tensor, dt: Tensor, dtx: Tensor, A: Tensor, B: Tensor, decay: Tensor, states: Tensor) -> None:
    """States of one chunk from the state ``h`` (B, N, D) before it, written into the given blocks.

    Args are time-major: dt, dtx = dt·x (L, B, D); A (N, D); B (L, B, N). Fills ``decay`` with a = exp(dt A) and
    ``states`` with h_1..h_L, both (L, B, N, D).
    """
    torch.mul(dt[:, :, None, :], A, out=decay)
    decay.exp_()
    torch.mul(B[..., None], dtx[:, :, None, :], out=states)  # u_t, overwritten in place by h_t
    states[0].addcmul_(decay[0], h)
    for t in range(1, states.shape[0]):
        states[t].addcmul_(decay[t], states[t - 1])


class _Blocks:
    """(L, B, N, D) work blocks reused by every chunk of a call: fresh multi-megabyte tensors per chunk would cost
    more in allocation (page faults) than the arithmetic on them."""

    def __init__(self, like: Tensor, chunk_size: int, count: int) -> None:
        self.blocks = [like.new_empty(chunk_size, *like.shape) for _ in range(count)]

    def take(self, length: int) -> list[Tensor]:
        """The blocks cut to a chunk of ``length`` tokens (the last chunk may be short)."""
        return [block[:length] for block in self.blocks]


def _sum_of_product(a: Tensor, b: Tensor, dim: int, scratch: Tensor, out: Tensor) -> None:
    """out = (a ⊙ b).sum(dim), the product formed in the scratch block."""
    torch.mul(a, b, out=scratch)
    torch.sum(scratch, dim, out=out)


def _scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor, chunk_size: int, starts: list[Tensor] | None
) -> tuple[Tensor, Tensor]:
    """The recurrence without D and z, on time-major inputs x, dt (T, B, D), B, C (T, B, N), A (N, D) and
    h0 (B, N, D); returns y (T, B, D) and the final state (B, N, D). Appends the state before each chunk to
    ``starts`` when given (what the backward needs to recompute the chunk)."""
    seq, channels = x.shape[0], x.shape[2]
    dtx = dt * x
    y = x.new_empty(x.shape)
    blocks = _Blocks(h0, min(chunk_size, seq), 2)
    h = h0
    for t0 in range(0, seq, chunk_size):
        t1 = min(t0 + chunk_size, seq)
        decay, states = blocks.take(t1 - t0)
        if starts is not None:
            starts.append(h)
        _chunk_states(h, dt[t0:t1], dtx[t0:t1], A, B[t0:t1], decay, states)
        # y_t = C_tᵀ h_t: a (1, N) @ (N, D) product per token
        flat = states.view(-1, A.shape[0], channels)
        torch.bmm(C[t0:t1].reshape(-1, 1, A.shape[0]), flat, out=y[t0:t1].view(-1, 1, channels))
        h = states[-1].clone()  # the block is reused by the next chunk
    return y, h


class _Scan(torch.autograd.Function):
    """``_scan`` with the backward of the module docstring: chunks recomputed from their start states, in reverse."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor, chunk_size: int
    ) -> tuple[Tensor, Tensor]:
        starts: list[Tensor] = []
        y, h = _scan(x, dt, A, B, C, h0, chunk_size, starts)
        ctx.save_for_backward(x, dt, A, B, C, torch.stack(starts))
        ctx.chunk_size = chunk_size
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dy: Tensor | None, dh_final: Tensor | None) -> tuple[Tensor | None, ...]:
        x, dt, A, B, C, starts = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        seq, channels = x.shape[0], x.shape[2]
        state_size = A.shape[0]
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        carry = torch.zeros_like(starts[0]) if dh_final is None else dh_final  # a_{t+1} ⊙ g_{t+1}, read only
        dtx = dt * x
        d_dt, d_dtx = torch.empty_like(dt), torch.empty_like(x)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)
        blocks = _Blocks(starts[0], min(chunk_size, seq), 4)
        for index in reversed(range(starts.shape[0])):
            t0 = index * chunk_size
            t1 = min(t0 + chunk_size, seq)
            decay, states, grad, scratch = blocks.take(t1 - t0)
            _chunk_states(starts[index], dt[t0:t1], dtx[t0:t1], A, B[t0:t1], decay, states)
            dy_c = dy[t0:t1, :, None, :]
            _sum_of_product(states, dy_c, -1, scratch, dC[t0:t1])
            # adjoint recurrence, in place: grad starts as C_t dy_tᵀ and becomes g_t
            torch.mul(C[t0:t1, :, :, None], dy_c, out=grad)
            grad[-1] += carry
            for t in range(grad.shape[0] - 2, -1, -1):
                grad[t].addcmul_(decay[t + 1], grad[t + 1])
            carry = decay[0] * grad[0]
            # u_t = dtx_t B_t: ∂dtx_t = B_tᵀ g_t, ∂B_t = g_t dtx_t
            flat = grad.view(-1, state_size, channels)
            torch.bmm(B[t0:t1].reshape(-1, 1, state_size), flat, out=d_dtx[t0:t1].view(-1, 1, channels))
            _sum_of_product(grad, dtx[t0:t1, :, None, :], -1, scratch, dB[t0:t1])
            # a_t = exp(dt_t A): ∂(dt_t A) = g_t ⊙ h_{t−1} ⊙ a_t, built in place in grad's block
            grad.mul_(decay)
            grad[1:].mul_(states[:-1])
            grad[0].mul_(starts[index])
            _sum_of_product(grad, A, 2, scratch, d_dt[t0:t1])
            torch.mul(grad, dt[t0:t1, :, None, :], out=scratch)
            dA += scratch.sum((0, 1))
        # dtx = dt·x
        dx = d_dtx * dt
        d_dt += d_dtx * x
        return dx, d_dt, dA, dB, dC, carry, None


def _check_shapes(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    initial_state: Tensor | None,
) -> None:
    if x.dim() != 3 or x.shape[-1] == 0:
        raise ValueError(f"x must be (batch, channels, T) with T >= 1; got shape {tuple(x.shape)}")
    batch, channels, seq = x.shape
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (channels, state_size) = ({channels}, N); got shape {tuple(A.shape)}")
    state_size = A.shape[1]
    expected = {
        "dt": (dt, (batch, channels, seq)),
        "B": (B, (batch, state_size, seq)),
        "C": (C, (batch, state_size, seq)),
        "D": (D, (channels,)),
        "z": (z, (batch, channels, seq)),
        "initial_state": (initial_state, (batch, channels, state_size)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} for x {tuple(x.shape)} and A {tuple(A.shape)}; "
                f"got {tuple(tensor.shape)}"
            )


def _step(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """One token (decoding) in the caller's layout, under plain autograd: a third of the ops of the chunked form,
    whose set-up dominates at T = 1 (~3x slower there). Returns y (batch, D, 1) and h (batch, D, N)."""
    h = (dt * x) * B.transpose(1, 2)  # u = dt x Bᵀ: (batch, D, 1) * (batch, 1, N)
    if h0 is not None:
        h = torch.addcmul(h, torch.exp(dt * A), h0)
    return torch.bmm(h, C), h


def _chunked(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """``_scan`` (differentiable through ``_Scan``) on the caller's layout: returns y (batch, D, T), h (batch, D, N)."""
    batch, channels = x.shape[:2]

    def time_major(tensor: Tensor) -> Tensor:
        # (batch, ·, T) -> contiguous (T, batch, ·): a chunk is then a contiguous slab and a token a contiguous slice
        return tensor.permute(2, 0, 1).contiguous()

    # inside, the state is (batch, N, D): channels innermost, so every per-token op runs over long contiguous rows
    h0 = x.new_zeros(batch, A.shape[1], channels) if h0 is None else h0.transpose(1, 2).contiguous()
    inputs = (time_major(x), time_major(dt), A.t().contiguous(), time_major(B), time_major(C), h0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        y, final = _Scan.apply(*inputs, chunk_size)
    else:  # no graph: skip keeping the chunk start states
        y, final = _scan(*inputs, chunk_size, None)
    return y.permute(1, 2, 0), final.transpose(1, 2)


def selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    initial_state: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-1's selective scan (see the module docstring for the maths), differentiable in every tensor input.

    Args:
        x: (batch, D, T) input of the scan (after Mamba's conv).
        dt: (batch, D, T) step sizes, already through bias and softplus.
        A: (D, N) continuous decay rates (Mamba: −exp(A_log)).
        B: (batch, N, T) input projections of the state.
        C: (batch, N, T) output projections of the state.
        D: optional (D,) skip weight: y += D ⊙ x.
        z: optional (batch, D, T) gate: y ← y ⊙ silu(z).
        initial_state: optional (batch, D, N) state h_0 (zeros if None), e.g. from a cache.
        chunk_size: tokens per chunk (``default_chunk_size`` if None); any value gives the same result up to
            rounding, it only trades speed and memory.

    Returns:
        y (batch, D, T) and the final state h_T (batch, D, N), both in the inputs' promoted dtype, at least float32
        (bfloat16 inputs are scanned in float32, as Mamba's kernels do).
    """
    _check_shapes(x, dt, A, B, C, D, z, initial_state)
    batch, channels = x.shape[:2]
    if chunk_size is None:
        chunk_size = default_chunk_size(batch, channels, A.shape[1])
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    dtype = torch.float32
    for tensor in (x, dt, A, B, C, D, z, initial_state):
        if tensor is not None:
            dtype = torch.promote_types(dtype, tensor.dtype)
    inputs = [t.to(dtype) for t in (x, dt, A, B, C)]
    h0 = None if initial_state is None else initial_state.to(dtype)
    y, final = _step(*inputs, h0) if x.shape[-1] == 1 else _chunked(*inputs, h0, chunk_size)
    if D is not None:
        y = y + D.to(dtype)[:, None] * x
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y, final
