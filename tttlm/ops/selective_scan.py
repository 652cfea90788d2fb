"""Selective scan (S6, the recurrence of Mamba-1) in plain PyTorch: linear time forward and backward, any start state.

Per batch row, channel d ∈ [0, D) and state index n ∈ [0, N), with step sizes dt_t > 0 (already through bias and
softplus), a decay rate A (D, N) (negative in Mamba), input-dependent B_t, C_t ∈ R^N and input x_t ∈ R^D:

    h_t = exp(dt_t A) ⊙ h_{t−1} + dt_t x_t B_t          h ∈ R^{D×N}, h_0 = initial_state (zeros if absent)
    y_t = h_t C_t + D ⊙ x_t                             then y_t ← y_t ⊙ silu(z_t) with a gate z

Two forms with one signature (``selective_scan(..., form=...)``): "recurrent", the readable reference (one token
at a time under plain autograd), and "chunk", the default, the fast form described here; a single token (decoding)
takes a direct step either way.

How. Time is cut into chunks of L tokens. Inside a chunk the discretised tensors a_t = exp(dt_t A) and
u_t = dt_t x_t B_t are built with a few batched ops on an (L, B, N, D) block (channels innermost: long contiguous
rows), the recurrence runs as a log-depth scan on the block (``linear_scan_``: about 3 log₂ L batched ops, no
per-token Python loop) and the outputs are one batched matmul per chunk. The blocks are allocated once per call and
reused by every chunk. The forward keeps only the state at the start of each chunk; the backward (hand-written, one
autograd node for the whole scan) recomputes a chunk's states from it, so memory is O(B·D·N·(L + T/L)), not the
O(B·D·N·T) of autograd through the recurrence, and runs the adjoint recurrence backwards in time with the same scan,

    g_t = C_t dy_tᵀ + a_{t+1} ⊙ g_{t+1}                 g_t = ∂loss/∂h_t (D×N), g_T = ∂loss/∂h_final + C_T dy_Tᵀ

from which every gradient is a per-token product, again batched per chunk:

    ∂(dt_t A) = g_t ⊙ h_{t−1} ⊙ a_t      ∂u_t = g_t      ∂C_t = h_tᵀ dy_t      ∂h_0 = a_1 ⊙ g_1

Each token costs O(D·N) forward and backward, so the scan is linear in T. transformers' pure-PyTorch fallback indexes
the (B, D, T, N) tensors token by token under autograd, and the backward of each index writes a whole-sequence zero
tensor: quadratic.

Why a scan and not matmuls. Mamba-2's SSD turns its recurrence into matmuls because its decay is one scalar per
head; here A differs per (d, n), so the chunk's "attention" form needs a (B, D, N, L, L) decay tensor (L/2 times the
exp calls, the dominant cost, of the scan), and the cumulative-sum form h_t = P_t Σ_{s≤t} u_s / P_s (P the running
product of decays) overflows in float32 once a chunk's decay passes e^-88. The Blelloch scan does ~3x the
arithmetic of the token loop on the same numbers (products of decays in (0, 1], sums), in 3 log₂ L ops instead of L.
Measured against the token loop it replaced (float32, 1 thread, CPU time, forward + backward of the scan with D and
z, inputs laid out as the mixer passes them; docs/BENCHMARKS.md): 2x faster at the tiny preset's width (B·D·N =
1·104·16) over 2048 tokens, 5-20 % faster at 8 sequences of 128-512 tokens, equal within the noise at 125m
(1·1456·16, T = 2048), where the token loop's slices are large enough that its per-op overhead was already small.
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
FORMS = ("chunk", "recurrent")


def default_chunk_size(batch: int, channels: int, state_size: int) -> int:
    """Tokens per chunk: the largest power of two in [8, 256] whose (L, B, N, D) block holds at most
    ``CHUNK_ELEMENTS`` elements (8 if none does)."""
    per_token = max(1, batch * channels * state_size)
    size = 8
    while size < 256 and 2 * size * per_token <= CHUNK_ELEMENTS:
        size *= 2
    return size


def _positions(n: int, reverse: bool, start: int, step: int, count: int, shift: int = 0) -> slice:
    """The tensor slice holding scan positions ``start, start + step, ..., start + step (count − 1)`` of an
    ``n``-token block: position τ is token τ, or token n − 1 − τ for a ``reverse`` scan (``shift`` 1 for the decay,
    which in reverse belongs to the token after)."""
    first = start if not reverse else n - 1 - (start + step * (count - 1))
    return slice(first + shift, first + step * (count - 1) + 1 + shift, step)


def linear_scan_(u: Tensor, a: Tensor, scratch: Tensor, reverse: bool = False) -> None:
    """``u_t ← u_t + a_t ⊙ u_{t−1}`` for t = 1 … n−1 in order (so u becomes h of ``h_t = a_t ⊙ h_{t−1} + u_t``,
    h_0 = u_0), along dim 0, in place and in O(log n) batched ops; ``reverse``: ``u_t ← u_t + a_{t+1} ⊙ u_{t+1}``
    for t = n−2 … 0 (the adjoint recurrence). ``a`` is read only; the decays of merged blocks go to ``scratch``
    (``a``'s shape).

    The work-efficient (Blelloch) scan on (decay, value) pairs, whose composition is
    ``(a₂, u₂) ∘ (a₁, u₁) = (a₂ a₁, u₂ + a₂ u₁)``: an up-sweep merges blocks of 1, 2, 4, … tokens (the value at a
    block's last token becomes the block's, its decay the product of the block's decays), then a down-sweep hands
    every block's last token the complete prefix before it. In scan order τ (t, or n−1−t in reverse), level k
    touches the last tokens τ ≡ 2k−1 (up) and τ ≡ k−1 (down) mod 2k only: about 3n token slices of work in 3 log₂ n
    ops, against n ops of one slice each for the token loop. Only decays multiply one another, so every operation
    is a product of decays (in (0, 1] for Mamba's A < 0) and a sum, as in the sequential recurrence, regrouped (no
    division, no exp of positive numbers). The decay of a block starting at τ = 0 is never needed (nothing comes
    before it), hence never formed, so the reverse scan never reads past the last token's decay.
    """
    n = u.shape[0]
    shift = 1 if reverse else 0

    def values(start: int, step: int, count: int) -> Tensor:
        return u[_positions(n, reverse, start, step, count)]

    def decays(k: int, start: int, step: int, count: int) -> Tensor:
        # the decay of the k-token blocks ending at these positions: a itself for k = 1, else a merged product
        return (a if k == 1 else scratch)[_positions(n, reverse, start, step, count, shift)]

    k = 1
    while 2 * k <= n:  # up-sweep: blocks of k tokens merged in pairs
        pairs = n // (2 * k)
        values(2 * k - 1, 2 * k, pairs).addcmul_(decays(k, 2 * k - 1, 2 * k, pairs), values(k - 1, 2 * k, pairs))
        if 4 * k <= n:  # the merged blocks' decays, needed by the next levels (not the first block's)
            right, left = decays(k, 4 * k - 1, 2 * k, pairs - 1), decays(k, 3 * k - 1, 2 * k, pairs - 1)
            torch.mul(right, left, out=scratch[_positions(n, reverse, 4 * k - 1, 2 * k, pairs - 1, shift)])
        k *= 2
    k //= 2
    while k >= 1:  # down-sweep: the last token of every k-block after the first 2k-block gets its prefix
        targets = (n - k) // (2 * k)
        if targets:
            values(3 * k - 1, 2 * k, targets).addcmul_(
                decays(k, 3 * k - 1, 2 * k, targets), values(2 * k - 1, 2 * k, targets)
            )
        k //= 2


def _chunk_states(
    h: Tensor, dt: Tensor, dtx: Tensor, A: Tensor, B: Tensor, decay: Tensor, states: Tensor, scratch: Tensor
) -> None:
    """States of one chunk from the state ``h`` (B, N, D) before it, written into the given blocks.

    Args are time-major: dt, dtx = dt·x (L, B, D); A (N, D); B (L, B, N). Fills ``decay`` with a = exp(dt A) and
    ``states`` with h_1..h_L, all (L, B, N, D); ``scratch`` is overwritten.
    """
    torch.mul(dt[:, :, None, :], A, out=decay)
    decay.exp_()
    torch.mul(B[..., None], dtx[:, :, None, :], out=states)  # u_t, overwritten in place by h_t
    states[0].addcmul_(decay[0], h)
    linear_scan_(states, decay, scratch)


class _Blocks:
    """(L, B, N, D) work blocks reused by every chunk of a call: fresh multi-megabyte tensors per chunk would cost
    more in allocation (page faults) than the arithmetic on them."""

    def __init__(self, like: Tensor, chunk_size: int, count: int) -> None:
        self.blocks = [like.new_empty(chunk_size, *like.shape) for _ in range(count)]

    def take(self, length: int) -> list[Tensor]:
        """The blocks cut to a chunk of ``length`` tokens (the last chunk may be short)."""
        return [block[:length] for block in self.blocks]


def _per_token_product(block: Tensor, vectors: Tensor, out: Tensor) -> None:
    """out[t, b] = block[t, b] @ vectors[t, b]: (L, B, N, D) blocks times (L, B, D) vectors into (L, B, N), as one
    batched product of row vectors, ``vectorsᵀ @ blockᵀ`` (no (L, B, N, D) temporary; MKL's matrix-vector path for
    ``block @ vectors`` measured 5-8x slower than this form)."""
    length, batch, state_size, channels = block.shape
    rows = length * batch
    torch.bmm(
        vectors.reshape(rows, 1, channels),
        block.view(rows, state_size, channels).transpose(1, 2),
        out=out.view(rows, 1, state_size),
    )


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
    blocks = _Blocks(h0, min(chunk_size, seq), 3)
    h = h0
    for t0 in range(0, seq, chunk_size):
        t1 = min(t0 + chunk_size, seq)
        decay, states, scratch = blocks.take(t1 - t0)
        if starts is not None:
            starts.append(h)
        _chunk_states(h, dt[t0:t1], dtx[t0:t1], A, B[t0:t1], decay, states, scratch)
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
            _chunk_states(starts[index], dt[t0:t1], dtx[t0:t1], A, B[t0:t1], decay, states, scratch)
            dy_c = dy[t0:t1, :, None, :]
            # ∂C_t = h_t dy_t: an (N, D) @ (D, 1) product per token
            _per_token_product(states, dy[t0:t1], dC[t0:t1])
            # adjoint recurrence, in place: grad starts as C_t dy_tᵀ and becomes g_t
            torch.mul(C[t0:t1, :, :, None], dy_c, out=grad)
            grad[-1] += carry
            linear_scan_(grad, decay, scratch, reverse=True)
            carry = decay[0] * grad[0]
            # u_t = dtx_t B_t: ∂dtx_t = B_tᵀ g_t, ∂B_t = g_t dtx_t
            flat = grad.view(-1, state_size, channels)
            torch.bmm(B[t0:t1].reshape(-1, 1, state_size), flat, out=d_dtx[t0:t1].view(-1, 1, channels))
            _per_token_product(grad, dtx[t0:t1], dB[t0:t1])
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


def _time_major(tensor: Tensor) -> Tensor:
    """(batch, ·, T) -> contiguous (T, batch, ·): a chunk is then a contiguous slab and a token a contiguous slice.
    Free (a view) when the tensor is a transposed view of (batch, T, ·) data and batch is 1, as in the mixer."""
    return tensor.permute(2, 0, 1).contiguous()


def _chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    h0: Tensor | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """``_scan`` (differentiable through ``_Scan``) on the caller's layout, with the skip and the gate applied in
    the time-major layout (elementwise ops on the permuted (batch, D, T) view of the output cost several times more):
    returns y (batch, D, T) (a view of time-major memory), h (batch, D, N)."""
    batch, channels = x.shape[:2]
    # inside, the state is (batch, N, D): channels innermost, so every per-token op runs over long contiguous rows
    h0 = x.new_zeros(batch, A.shape[1], channels) if h0 is None else h0.transpose(1, 2).contiguous()
    x_t = _time_major(x)
    inputs = (x_t, _time_major(dt), A.t().contiguous(), _time_major(B), _time_major(C), h0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        y, final = _Scan.apply(*inputs, chunk_size)
    else:  # no graph: skip keeping the chunk start states
        y, final = _scan(*inputs, chunk_size, None)
    if D is not None:
        y = torch.addcmul(y, x_t, D)
    if z is not None:
        y = y * F.silu(_time_major(z))
    return y.permute(1, 2, 0), final.transpose(1, 2)


def _skip_and_gate(y: Tensor, x: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D ⊙ x, then ⊙ silu(z), on the caller's (batch, D, T) layout."""
    if D is not None:
        y = y + D[:, None] * x
    return y if z is None else y * F.silu(z)


def _recurrent(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """The reference: the recurrence of the module docstring one token at a time, under plain autograd (readable,
    and slow: O(T) Python steps, an autograd graph that grows with T). Same layouts as ``selective_scan``; without
    the skip and the gate."""
    batch, channels, seq = x.shape
    h = x.new_zeros(batch, channels, A.shape[1]) if h0 is None else h0
    outputs = []
    for t in range(seq):
        decay = torch.exp(dt[:, :, t, None] * A)  # (batch, D, N)
        h = decay * h + (dt[:, :, t] * x[:, :, t])[..., None] * B[:, None, :, t]
        outputs.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(outputs, dim=-1), h


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
    form: str = "chunk",
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
        chunk_size: tokens per chunk of the chunk form (``default_chunk_size`` if None); any value gives the same
            result up to rounding, it only trades speed and memory.
        form: "chunk" (default: chunks of log-depth scans, one autograd node; a single token takes a direct step)
            or "recurrent" (the token-by-token reference under plain autograd).

    Returns:
        y (batch, D, T) and the final state h_T (batch, D, N), both in the inputs' promoted dtype, at least float32
        (bfloat16 inputs are scanned in float32, as Mamba's kernels do).
    """
    _check_shapes(x, dt, A, B, C, D, z, initial_state)
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    batch, channels = x.shape[:2]
    if chunk_size is None:
        chunk_size = default_chunk_size(batch, channels, A.shape[1])
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    dtype = torch.float32
    for tensor in (x, dt, A, B, C, D, z, initial_state):
        if tensor is not None:
            dtype = torch.promote_types(dtype, tensor.dtype)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    D, z, h0 = (None if t is None else t.to(dtype) for t in (D, z, initial_state))
    if form == "chunk" and x.shape[-1] > 1:
        return _chunked(x, dt, A, B, C, D, z, h0, chunk_size)
    y, final = _recurrent(x, dt, A, B, C, h0) if form == "recurrent" else _step(x, dt, A, B, C, h0)
    return _skip_and_gate(y, x, D, z), final
