"""The LaCT mixer (``layers/lact.LaCTLayer``, the ``ttt-kvb`` arch's layer): streaming equals prefill, its forms
agree, the inner-lr scale reaches the fast-weight step, and bad settings are refused."""

from __future__ import annotations

import pytest
import torch

from tttlm.layers.lact import LaCTLayer
from tttlm.models import build
from tttlm.ops.lact.update import NORM_EPS

TOL = {"rtol": 1e-10, "atol": 1e-12}


def make_layer(**kwargs: object) -> LaCTLayer:
    torch.manual_seed(0)
    settings = {"window": 5, "chunk_size": 4, "low_rank": 3, **kwargs}
    layer = LaCTLayer(32, 4, 2, **settings).double()
    with torch.no_grad():  # the model's init would do the projections; make lr and momentum matter
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return layer


def inputs(seq: int = 19) -> torch.Tensor:
    return torch.randn(2, seq, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"use_muon": True},
        {"use_momentum": False, "learnable_ttt_scale": False},
        {"low_rank": None},
        {"qk_norm": True},
    ],
    ids=["release", "muon", "plain", "full-rank", "qk-norm"],
)
def test_streaming_equals_prefill(settings) -> None:
    layer, x = make_layer(**settings), inputs()
    y, full = layer(x)
    for splits in ([1] * 19, [3, 1, 6, 9], [8, 11]):
        cache, outputs, start = None, [], 0
        for n in splits:
            out, cache = layer(x[:, start : start + n], cache)
            outputs.append(out)
            start += n
        torch.testing.assert_close(torch.cat(outputs, dim=1), y, **TOL)
        assert cache.fast.position == full.fast.position == 19 % 4
        for a, b in zip(cache.fast.weights, full.fast.weights, strict=True):
            torch.testing.assert_close(a, b, **TOL)
        assert cache.attention.keys.shape[1] == 4  # window − 1 kept


def test_reference_form_equals_chunk_form() -> None:
    layer, x = make_layer(), inputs()
    y_chunk, _ = layer(x)
    layer.form = "reference"
    y_ref, _ = layer(x)
    torch.testing.assert_close(y_ref, y_chunk, **TOL)


def test_the_fast_weights_change_later_chunks_only() -> None:
    layer, x = make_layer(), inputs()
    y, _ = layer(x)
    layer.chunk_size = 64  # no chunk completes inside 19 tokens: no update at all
    y_static, _ = layer(x)
    torch.testing.assert_close(y_static[:, :4], y[:, :4], rtol=0, atol=0)
    assert not torch.allclose(y_static[:, 4:], y[:, 4:])


def test_inner_lr_scale_multiplies_the_step() -> None:
    layer, x = make_layer(use_momentum=False), inputs(4)
    layer.inner_lr_scale = 0.0
    _, cache = layer(x)
    for w, w_init in zip(cache.fast.weights, layer.initial_weights(), strict=True):
        norm = w_init.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(w[0], w_init / (norm + NORM_EPS) * norm, **TOL)
    layer.inner_lr_scale = 1.0
    _, moved = layer(x)
    assert not torch.allclose(moved.fast.weights[1], cache.fast.weights[1])


def test_the_model_warms_its_layers() -> None:
    model = build("ttt-kvb", "tiny")
    assert model.has_inner_lr
    assert model.inner_lr_warmup_ratio is None  # LaCT's recipe has no inner warm-up
    model.set_inner_lr_scale(0.25)
    assert {layer.lact.inner_lr_scale for layer in model.model.layers} == {0.25}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_lact_heads": 3}, "must be a multiple of num_lact_heads"),
        ({"form": "dual"}, "form must be one of"),
        ({"base_lr": 0.0}, "base_lr must be > 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LaCTLayer(32, 4, **{"num_lact_heads": 2, **kwargs})
