"""The theory the paper states (§2.6): TTT-Linear with batch GD is linear attention; Nadaraya–Watson with the
softmax kernel is self-attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from ttt_testing import FORMS, assert_close, assert_rel_close

from tttlm.ops import nadaraya_watson, ttt_linear
from tttlm.ops.nonparametric import dot_product_log_kernel


def causal_linear_attention(q: Tensor, k: Tensor, v: Tensor, eta: float) -> Tensor:
    """z_t = η Σ_{s≤t} (q_t·k_s) v_s, (B, T, H, d) layout, via a masked matmul."""
    scores = torch.einsum("bthd,bshd->bhts", q, k)
    mask = torch.ones(q.shape[1], q.shape[1], dtype=torch.bool).tril()
    return eta * torch.einsum("bhts,bshd->bthd", scores.masked_fill(~mask, 0.0), v)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seq", [1, 6, 13])
def test_batch_gd_ttt_linear_is_linear_attention(form: str, seq: int) -> None:
    """f(x) = x W, W0 = 0, constant η, one mini-batch spanning the sequence, δ_i = 1 − 1/i (every scale 1)."""
    gen = torch.Generator().manual_seed(seq)
    batch, heads, d, eta = 2, 3, 5, 0.37
    q, k, v = (torch.randn(batch, seq, heads, d, generator=gen, dtype=torch.float64) for _ in range(3))
    lr = torch.full((batch, seq, heads), eta, dtype=torch.float64)
    i = torch.arange(1, seq + 1, dtype=torch.float64)
    token_offset = 1.0 - 1.0 / i
    weight = torch.zeros(heads, d, d, dtype=torch.float64)
    z, state = ttt_linear(q, k, v, lr, weight, None, None, None, token_offset, mini_batch_size=seq, form=form)
    expected = causal_linear_attention(q, k, v, eta)
    assert_rel_close(z, expected)
    assert_close(z, expected, rtol=1e-10, atol=1e-12)
    # the whole sequence is one closed mini-batch: the final W is η Σ_s k_sᵀ v_s
    assert state.position == 0
    assert_close(state.weights[0], eta * torch.einsum("bshi,bsho->bhio", k, v))


def test_linear_attention_needs_unit_scales() -> None:
    """Guard against a vacuous pass: with the default δ = 0 (scale 1/i) the output is the *averaged* update."""
    gen = torch.Generator().manual_seed(0)
    batch, seq, heads, d, eta = 1, 5, 1, 3, 0.5
    q, k, v = (torch.randn(batch, seq, heads, d, generator=gen, dtype=torch.float64) for _ in range(3))
    lr = torch.full((batch, seq, heads), eta, dtype=torch.float64)
    weight = torch.zeros(heads, d, d, dtype=torch.float64)
    z, _ = ttt_linear(q, k, v, lr, weight, None, None, None, mini_batch_size=seq)
    i = torch.arange(1, seq + 1, dtype=torch.float64)[None, :, None, None]
    assert_close(z, causal_linear_attention(q, k, v, eta) / i)


def _bhtd(x: Tensor) -> Tensor:
    return x.transpose(1, 2)


@pytest.mark.parametrize(("batch", "seq", "heads", "d"), [(2, 7, 3, 4), (1, 1, 1, 2), (3, 16, 2, 8)])
def test_nadaraya_watson_softmax_kernel_is_attention(batch: int, seq: int, heads: int, d: int) -> None:
    gen = torch.Generator().manual_seed(seq)
    q, k, v = (torch.randn(batch, seq, heads, d, generator=gen, dtype=torch.float64) for _ in range(3))
    z = nadaraya_watson(q, k, v)
    expected = _bhtd(F.scaled_dot_product_attention(_bhtd(q), _bhtd(k), _bhtd(v), is_causal=True))
    assert z.shape == (batch, seq, heads, d)
    assert_close(z, expected)
    assert_close(nadaraya_watson(q, k, v, log_kernel=dot_product_log_kernel), expected)


def test_nadaraya_watson_value_dim_may_differ() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 6, 2, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 6, 2, 3, generator=gen, dtype=torch.float64)
    expected = _bhtd(F.scaled_dot_product_attention(_bhtd(q), _bhtd(k), _bhtd(v), is_causal=True))
    assert_close(nadaraya_watson(q, k, v), expected)


def test_nadaraya_watson_large_logits() -> None:
    """Large but finite logits (sharp attention) must still give softmax attention, not NaN.

    Query 0 may only see key 0 (logit −a) while the future key 1 has logit +a. Softmax over the visible keys
    is exactly v_0. Shifting by a maximum that includes masked (future) keys underflows exp(−2a) to 0 for
    2a > ~745 in float64 and gives 0/0.
    """
    d, a = 4, 400.0
    scale = math.sqrt(a * math.sqrt(d))
    e = torch.zeros(d, dtype=torch.float64)
    e[0] = scale
    q = torch.stack([e, e])[None, :, None, :]  # (1, 2, 1, d)
    k = torch.stack([-e, e])[None, :, None, :]  # logits q_0·k_0/√d = −a, q_0·k_1/√d = +a
    v = torch.arange(2 * d, dtype=torch.float64).reshape(1, 2, 1, d)
    expected = _bhtd(F.scaled_dot_product_attention(_bhtd(q), _bhtd(k), _bhtd(v), is_causal=True))
    assert_close(expected[0, 0, 0], v[0, 0, 0])
    z = nadaraya_watson(q, k, v)
    assert torch.isfinite(z).all(), f"nadaraya_watson returned {z}"
    assert_close(z, expected)


def gaussian_log_kernel(bandwidth: float):
    def log_kernel(q: Tensor, k: Tensor) -> Tensor:
        return -torch.cdist(q, k).pow(2) / (2 * bandwidth**2)

    return log_kernel


@pytest.mark.parametrize("bandwidth", [0.7, 2.0])
def test_nadaraya_watson_user_kernel_matches_double_loop(bandwidth: float) -> None:
    gen = torch.Generator().manual_seed(3)
    batch, seq, heads, d = 2, 6, 2, 3
    q, k, v = (torch.randn(batch, seq, heads, d, generator=gen, dtype=torch.float64) for _ in range(3))
    z = nadaraya_watson(q, k, v, log_kernel=gaussian_log_kernel(bandwidth))
    expected = torch.zeros_like(v)
    for b in range(batch):
        for h in range(heads):
            for t in range(seq):
                num = torch.zeros(d, dtype=torch.float64)
                den = 0.0
                for s in range(t + 1):
                    w = math.exp(-float(((q[b, t, h] - k[b, s, h]) ** 2).sum()) / (2 * bandwidth**2))
                    num = num + w * v[b, s, h]
                    den += w
                expected[b, t, h] = num / den
    assert_close(z, expected)


def test_nadaraya_watson_first_output_is_first_value() -> None:
    """With one visible pair the estimate is that target, whatever the kernel."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 5, 2, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    for log_kernel in (dot_product_log_kernel, gaussian_log_kernel(1.0)):
        assert_close(nadaraya_watson(q, k, v, log_kernel=log_kernel)[:, 0], v[:, 0])


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "v_shape"),
    [((2, 5, 2, 3), (2, 4, 2, 3), (2, 4, 2, 3)), ((2, 5, 2, 3), (2, 5, 2, 3), (2, 5, 1, 3)), ((5, 2, 3),) * 3],
)
def test_nadaraya_watson_rejects_bad_shapes(q_shape, k_shape, v_shape) -> None:
    q, k, v = torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape)
    with pytest.raises(ValueError, match="q, k"):
        nadaraya_watson(q, k, v)
