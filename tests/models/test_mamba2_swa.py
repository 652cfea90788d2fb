"""mamba2-swa: transformers' Mamba-2 mixer as a stack mixer (``ssm.stack_mixer``) and the Samba-layout hybrid.

The stack's call contract (cached decoding = full forward, generate, save/load) is checked for every arch in
``test_baselines.py``; here: the adapter against the library's own cache, that it leaves the cache it was given as
it was, and the registry's layout and dims."""

from __future__ import annotations

import pytest
import torch
from baseline_testing import rel_err
from transformers import DynamicCache, Mamba2Config

from tttlm.models import build, make_config
from tttlm.models.ssm.stack_mixer import Mamba2LayerCache, Mamba2StackMixer

# prefill, decode steps and multi-token continuations through one cache; the second starts shorter than the conv
PIECES = [[5, 1, 1, 6, 1, 3], [2, 1, 6, 1, 7]]


def _mixer() -> Mamba2StackMixer:
    torch.manual_seed(0)
    return Mamba2StackMixer(32, head_dim=8, state_size=8, n_groups=2, chunk_size=4).double().eval()


@pytest.mark.parametrize("pieces", PIECES)
@torch.no_grad()
def test_streaming_equals_the_library_mixer_with_its_own_cache(pieces: list[int]) -> None:
    """The same weights run by the library through a ``DynamicCache`` of Mamba layers: every piece's output and
    the final states agree to float64 rounding (both run the library's float32 scan in the same order)."""
    ours = _mixer()
    config = Mamba2Config(
        num_hidden_layers=1, hidden_size=32, num_heads=8, head_dim=8, state_size=8, n_groups=2, chunk_size=4
    )
    x = torch.randn(2, sum(pieces), 32, dtype=torch.float64)
    library_cache, cache, start = DynamicCache(config=config), None, 0
    for n in pieces:
        piece = x[:, start : start + n]
        theirs = super(Mamba2StackMixer, ours).forward(piece, cache=library_cache)
        y, cache = ours(piece, cache)
        assert rel_err(y, theirs) < 1e-12
        start += n
    assert rel_err(cache.ssm, library_cache.get_recurrent_state(0)) < 1e-12
    assert torch.equal(cache.conv, library_cache.get_conv_state(0))


@pytest.mark.parametrize("pieces", PIECES)
@torch.no_grad()
def test_streaming_equals_one_full_forward_and_leaves_the_given_cache_alone(pieces: list[int]) -> None:
    mixer = _mixer()
    x = torch.randn(2, sum(pieces), 32, dtype=torch.float64)
    full, final = mixer(x)
    outputs, cache, start = [], None, 0
    for n in pieces:
        before = None if cache is None else Mamba2LayerCache(*(t.clone() for t in cache))
        y, new = mixer(x[:, start : start + n], cache)
        if cache is not None:  # the one-token path updates its states in place: on copies only
            assert all(torch.equal(a, b) for a, b in zip(cache, before, strict=True))
        outputs.append(y)
        cache, start = new, start + n
    # the library's scan casts to float32 and keeps a float32 state: 8e-8 relative measured; a lost state is 1e-1
    assert rel_err(torch.cat(outputs, dim=1), full) < 1e-6
    assert final.ssm.dtype == torch.float32
    assert rel_err(cache.ssm, final.ssm) < 1e-6


def test_registry_layout_and_dims() -> None:
    config = make_config("mamba2-swa", "125m")
    # Samba's layout (mb_per_layer 2): Mamba-2 in even layers, SWA in odd, window 2048
    assert config.layer_mixers == [["mamba2"], ["sliding_attention"]] * 6
    assert (config.sliding_window, config.mamba2_head_dim, config.mamba2_state_size) == (2048, 64, 128)
    assert (config.mamba2_expand, config.mamba2_n_groups, config.mamba2_chunk_size) == (2, 1, 256)
    with torch.device("meta"):
        model = build("mamba2-swa", "1.3b")
    mixer = model.model.layers[0].mamba
    assert isinstance(mixer, Mamba2StackMixer)
    assert (mixer.num_heads, mixer.head_dim, mixer.intermediate_size) == (64, 64, 4096)  # 2 × 2048 / 64
    tiny = make_config("mamba2-swa", "tiny")
    assert (tiny.mamba2_head_dim, tiny.mamba2_state_size, tiny.sliding_window) == (16, 8, 64)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [({"mamba2_head_dim": 48}, "mamba2_head_dim=48"), ({"mamba2_n_groups": 5}, "mamba2_n_groups=5")],
)
def test_dims_that_do_not_divide_are_refused(overrides: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        make_config("mamba2-swa", "tiny", **overrides)


def test_stacks_without_a_mamba2_mixer_do_not_check_its_dims() -> None:
    # swa at width 16 has a Mamba-2 inner width of 32, which the default head dim 64 does not divide
    config = make_config("swa", "tiny", hidden_size=16, intermediate_size=32, num_attention_heads=2)
    assert config.hidden_size == 16
    with pytest.raises(ValueError, match="mamba2_head_dim=64"):
        make_config("mamba2-swa", "tiny", hidden_size=16, intermediate_size=32, num_attention_heads=2,
                    mamba2_head_dim=64)  # fmt: skip
