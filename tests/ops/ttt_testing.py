"""Shared helpers for the functional TTT op tests: random inputs, calling an op in any form, comparisons.

Imported by the test modules as ``ttt_testing`` (pytest puts this directory on ``sys.path``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from tttlm.ops import TTTState, ttt_linear, ttt_mlp

FORMS = ("primal", "dual", "step")
RTOL = 1e-10
ATOL = 1e-12


@dataclass(frozen=True)
class Variant:
    """One configuration of an op: which inner model, with or without the inner bias / LayerNorm."""

    op: str  # "linear" or "mlp"
    bias: bool = True  # linear only: inner bias present
    ln: bool = True  # inner LayerNorm + residual present

    @property
    def id(self) -> str:
        parts = [self.op]
        if self.op == "linear" and not self.bias:
            parts.append("nobias")
        if not self.ln:
            parts.append("noln")
        return "-".join(parts)


VARIANTS = (
    Variant("linear"),
    Variant("linear", bias=False),
    Variant("linear", ln=False),
    Variant("linear", bias=False, ln=False),
    Variant("mlp"),
    Variant("mlp", ln=False),
)
VARIANT_IDS = [v.id for v in VARIANTS]


@dataclass
class TTTInputs:
    """Every argument of ``ttt_linear`` / ``ttt_mlp`` except the keyword-only ones (and the mini-batch size)."""

    op: str
    q: Tensor
    k: Tensor
    v: Tensor
    lr: Tensor
    params: tuple[Tensor | None, ...]  # (weight, bias) or (weight1, bias1, weight2, bias2)
    ln_weight: Tensor | None
    ln_bias: Tensor | None
    token_offset: Tensor | None
    mini_batch_size: int

    @property
    def seq(self) -> int:
        return self.q.shape[1]

    def run(
        self,
        form: str = "dual",
        start: int = 0,
        stop: int | None = None,
        initial_state: TTTState | None = None,
        **kwargs,
    ) -> tuple[Tensor, TTTState]:
        """Call the op on tokens [start, stop) of the sequence."""
        fn = ttt_linear if self.op == "linear" else ttt_mlp
        sl = slice(start, stop)
        return fn(
            self.q[:, sl],
            self.k[:, sl],
            self.v[:, sl],
            self.lr[:, sl],
            *self.params,
            self.ln_weight,
            self.ln_bias,
            self.token_offset,
            mini_batch_size=self.mini_batch_size,
            initial_state=initial_state,
            form=form,
            **kwargs,
        )

    def named_tensors(self) -> dict[str, Tensor]:
        """Every tensor argument that is present, by name."""
        names = ("weight", "bias") if self.op == "linear" else ("weight1", "bias1", "weight2", "bias2")
        out = {"q": self.q, "k": self.k, "v": self.v, "lr": self.lr}
        out.update({n: p for n, p in zip(names, self.params, strict=True) if p is not None})
        for name in ("ln_weight", "ln_bias", "token_offset"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def as_leaves(self) -> TTTInputs:
        """A copy whose tensors are fresh leaves with ``requires_grad=True``."""

        def leaf(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().clone().requires_grad_(True)

        return dataclasses.replace(
            self,
            q=leaf(self.q),
            k=leaf(self.k),
            v=leaf(self.v),
            lr=leaf(self.lr),
            params=tuple(leaf(p) for p in self.params),
            ln_weight=leaf(self.ln_weight),
            ln_bias=leaf(self.ln_bias),
            token_offset=leaf(self.token_offset),
        )


def make_inputs(
    variant: Variant,
    *,
    batch: int = 2,
    seq: int = 10,
    heads: int = 2,
    dim: int | None = None,
    hidden: int | None = None,
    mini_batch_size: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    offset_scale: float = 0.05,
    lr_scale: float = 0.3,
) -> TTTInputs:
    """Random, well-conditioned inputs: nonzero biases, LN params and token offsets, positive lr."""
    gen = torch.Generator().manual_seed(seed)
    d = dim if dim is not None else (4 if variant.op == "mlp" else 6)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    q, k, v = randn(batch, seq, heads, d), randn(batch, seq, heads, d), randn(batch, seq, heads, d)
    lr = lr_scale * torch.rand(batch, seq, heads, generator=gen, dtype=dtype) + 0.02
    if variant.op == "linear":
        params: tuple[Tensor | None, ...] = (
            0.3 * randn(heads, d, d),
            0.2 * randn(heads, d) if variant.bias else None,
        )
    else:
        h = hidden if hidden is not None else 4 * d
        params = (
            randn(heads, d, h) / d**0.5,
            0.2 * randn(heads, h),
            randn(heads, h, d) / h**0.5,
            0.2 * randn(heads, d),
        )
    if variant.ln:
        ln_weight, ln_bias = 1.0 + 0.2 * randn(heads, d), 0.2 * randn(heads, d)
    else:
        ln_weight = ln_bias = None
    token_offset = offset_scale * randn(mini_batch_size)
    return TTTInputs(variant.op, q, k, v, lr, params, ln_weight, ln_bias, token_offset, mini_batch_size)


def assert_close(actual: Tensor, expected: Tensor, rtol: float = RTOL, atol: float = ATOL, msg: str = "") -> None:
    """float64-tight comparison that also checks shape and dtype."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=(lambda m: f"{msg}: {m}") if msg else None)


def assert_rel_close(actual: Tensor, expected: Tensor, tol: float = RTOL, msg: str = "") -> None:
    """‖a − b‖ / ‖b‖ ≤ tol (for whole-tensor comparisons where single entries may be tiny)."""
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).norm() / expected.norm().clamp_min(1e-300)
    assert err <= tol, f"{msg}: relative error {err.item():.3e} > {tol:.1e}"


def assert_state_close(actual: TTTState, expected: TTTState, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert isinstance(actual, TTTState)
    assert actual.position == expected.position, f"position {actual.position} != {expected.position}"
    assert len(actual.weights) == len(expected.weights)
    assert len(actual.grad_sums) == len(expected.grad_sums)
    for i, (a, e) in enumerate(zip(actual.weights, expected.weights, strict=True)):
        assert_close(a, e, rtol, atol, msg=f"state weight {i}")
    for i, (a, e) in enumerate(zip(actual.grad_sums, expected.grad_sums, strict=True)):
        assert_close(a, e, rtol, atol, msg=f"state grad_sum {i}")


def state_as_leaves(state: TTTState) -> TTTState:
    """A copy of ``state`` whose tensors are fresh leaves with ``requires_grad=True``."""
    return TTTState(
        tuple(w.detach().clone().requires_grad_(True) for w in state.weights),
        tuple(g.detach().clone().requires_grad_(True) for g in state.grad_sums),
        state.position,
    )
