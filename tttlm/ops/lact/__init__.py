"""LaCT's large-chunk test-time training with a SwiGLU fast weight per head (Zhang et al. 2025, "Test-Time Training
Done Right"; the maths is in ``update``).

``lact_swiglu(..., form=...)`` computes the same function in two forms with one signature:

- ``"reference"``: each token's gradient from explicit vectors (``update.token_gradients``), readable and slow;
- ``"chunk"``: a chunk's gradients in a few einsums (``update.chunk_gradients``), the default.

Causality is LaCT's "apply, then update" (shifted block-causal): tokens of chunk c read the fast weights updated
with chunks 0 … c − 1, so the sliding-window attention beside it covers the tokens of the chunk itself. A call
continues from ``initial_state`` at any split point (an open chunk's gradients are summed as its tokens arrive and
applied when it is full), so decoding token by token gives one-shot prefill's outputs.

Where we differ from the release: the op runs in its inputs' dtype (the release computes under bf16 autocast,
Newton-Schulz in bf16, the fast weights optionally in fp32); a full last chunk is applied to the returned state
(the release's one-shot forward never applies its last chunk, which no output reads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tttlm.ops.checks import check_tensor
from tttlm.ops.lact.state import LaCTState
from tttlm.ops.lact.update import apply_update, chunk_gradients, swiglu_apply, token_gradients

FORMS = ("chunk", "reference")
Weights = tuple[Tensor, Tensor, Tensor]
Gradients = Callable[[Tensor, Tensor, Tensor, Weights], Weights]
GRADIENTS: dict[str, Gradients] = {"chunk": chunk_gradients, "reference": token_gradients}


def lact_swiglu(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    w0: Tensor,
    w1: Tensor,
    w2: Tensor,
    momentum: Tensor | None = None,
    *,
    chunk_size: int = 2048,
    use_muon: bool = False,
    weight_norm: bool = True,
    initial_state: LaCTState | None = None,
    form: str = "chunk",
    check_finite: bool = False,
) -> tuple[Tensor, LaCTState]:
    """Large-chunk TTT of a SwiGLU fast weight per head, read at q.

    Args:
        q, k, v: (batch, seq, heads, d) queries, keys and values (the release L2-normalises q and k).
        lr: (batch, seq, heads, 3) per-token learning rates of w0, w1, w2 (>= 0; the release: softplus).
        w0, w2: (heads, hidden, d) and w1: (heads, d, hidden), the initial fast weights (used when
            ``initial_state`` is None).
        momentum: (batch, seq, heads) per-token momentum in [0, 1] (the release: a sigmoid), averaged per chunk;
            None: no momentum.
        chunk_size: tokens per update (LaCT's LM configs: 2048).
        use_muon: orthogonalise each update with Newton-Schulz (the release's ``use_muon``).
        weight_norm: rescale each row of the updated weights to its initial norm (the release always does).
        initial_state: continue from a state returned by an earlier call (its momentum must match).
        form: "chunk" or "reference" (the module docstring).
        check_finite: also reject NaN/Inf inputs.

    Returns:
        o: (batch, seq, heads, d) ``f(q_t; W_c)`` with W_c the weights of token t's chunk; the ``LaCTState``
        after the last token.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {list(FORMS)}; got {form!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (LaCT's LM configs use 2048); got {chunk_size!r}")
    if not isinstance(q, Tensor) or q.dim() != 4 or not q.is_floating_point() or 0 in q.shape:
        shape = tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__
        raise ValueError(f"q must be a non-empty floating-point tensor (batch, seq, heads, d); got {shape}")
    batch, seq, heads, d = q.shape
    if not isinstance(w1, Tensor) or w1.dim() != 3:
        raise ValueError("w1 must be a tensor (heads, d, hidden)")
    hidden = w1.shape[-1]
    for name, t, shape in (
        ("k", k, q.shape),
        ("v", v, q.shape),
        ("lr", lr, (batch, seq, heads, 3)),
        ("w0", w0, (heads, hidden, d)),
        ("w1", w1, (heads, d, hidden)),
        ("w2", w2, (heads, hidden, d)),
    ):
        check_tensor(name, t, shape, q, check_finite)
    if momentum is not None:
        check_tensor("momentum", momentum, (batch, seq, heads), q, check_finite)
    if initial_state is not None:
        if not isinstance(initial_state, LaCTState):
            raise TypeError(
                f"initial_state must be a LaCTState returned by lact_swiglu; got {type(initial_state).__name__}"
            )
        if (initial_state.momentum_sum is None) != (momentum is None):
            raise ValueError(
                "initial_state was made with" + (" " if momentum is None else "out ") + "momentum but this call "
                "passes " + ("none" if momentum is None else "some") + "; continue a stream with the same options"
            )
        if not 0 <= initial_state.position < chunk_size:
            raise ValueError(
                f"initial_state has {initial_state.position} tokens of an open chunk, not fewer than chunk_size="
                f"{chunk_size}; continue a stream with the chunk size it started with"
            )
        for name, t, shape in zip(
            ("w0", "w1", "w2"), initial_state.weights, ((hidden, d), (d, hidden), (hidden, d)), strict=True
        ):
            check_tensor(f"initial_state.weights ({name})", t, (batch, heads, *shape), q, False)
    return run_lact(
        GRADIENTS[form], q, k, v, lr, (w0, w1, w2), momentum, chunk_size, use_muon, weight_norm, initial_state
    )


def run_lact(
    gradients: Gradients,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    initial_weights: Weights,
    momentum: Tensor | None,
    chunk_size: int,
    use_muon: bool,
    weight_norm: bool,
    initial_state: LaCTState | None,
) -> tuple[Tensor, LaCTState]:
    """The unchecked core of ``lact_swiglu`` (the layer calls it): ``gradients`` is ``chunk_gradients`` or
    ``token_gradients``. Runs the sequence in segments that end where a chunk does."""
    state = initial_state
    if state is None:
        state = LaCTState.initial(*initial_weights, q.shape[0], momentum=momentum is not None)
    weights, sums, m_sum, velocity, norms, position = state
    outputs, start, seq = [], 0, q.shape[1]
    while start < seq:
        end = min(seq, start + chunk_size - position)
        outputs.append(swiglu_apply(q[:, start:end], weights))
        g = gradients(k[:, start:end], v[:, start:end], lr[:, start:end], weights)
        sums = tuple(s + gi for s, gi in zip(sums, g, strict=True))
        if m_sum is not None:
            m_sum = m_sum + momentum[:, start:end].sum(dim=1)
        position += end - start
        if position == chunk_size:
            mean_m = None if m_sum is None else m_sum / chunk_size
            weights, velocity = apply_update(
                weights, sums, norms, mean_m, velocity, use_muon=use_muon, weight_norm=weight_norm
            )
            sums = tuple(torch.zeros_like(s) for s in sums)
            m_sum = None if m_sum is None else torch.zeros_like(m_sum)
            position = 0
        start = end
    o = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    return o, LaCTState(weights, sums, m_sum, velocity, norms, position)


__all__ = ["FORMS", "GRADIENTS", "LaCTState", "lact_swiglu", "run_lact"]
