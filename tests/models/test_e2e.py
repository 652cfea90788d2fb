"""TTT-E2E: structure and config, the inner step (target, direction, per-sequence), the exact meta-gradient, the
reduction to the SWA backbone at inner lr 0, streaming (any split = one call, bounded cache), inference mode,
training; the optional short conv (``short_conv``, not the release's) in the streaming, cache and gradient tests.
The registry contract (generate, beam search, save/load, ...) is in ``test_baselines.py``, the registry's
``short_conv`` knob in ``test_short_conv.py``."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from baseline_testing import logits_in_pieces, random_ids, rel_err
from e2e_small import SMALL_E2E, small_e2e
from torch import Tensor

from tttlm.models import E2ECache, E2EConfig, E2EForCausalLM, build, make_config, prefill
from tttlm.models.e2e.cache import E2EBlockCache, E2EBlockState
from tttlm.models.hf_compat import cache_argument, output_cache

TOL64 = 1e-10  # float64, same maths summed in another order: ~1e-15 measured; real state errors show at 1e-3+

# Small windows and mini-batches so that ~20-token inputs cross several of them; inner lr 1 and a 5x larger init
# than the default so that the inner steps move the logits by ~0.1 (an error in them cannot hide below 1e-10).
SMALL = {"sliding_window": 5, "attention_block_size": 4, "mini_batch_size": 4, "inner_lr": 1.0}

# A smaller model for the finite-difference tests: e2e_small's 4 blocks, the top 2 updated (so the inner gradient of
# block 2 goes through block 3's attention), with updated and prime MLPs narrow enough for many exact evaluations.
FD_MODEL = {**SMALL_E2E, "updated_intermediate_size": 8, "prime_intermediate_size": 16}


def _e2e(dtype: torch.dtype = torch.float64, seed: int = 0, **overrides: object) -> E2EForCausalLM:
    torch.manual_seed(seed)
    return build("ttt-e2e", "tiny", **{**SMALL, **overrides}).to(dtype).eval()


def _fd_model(**overrides: object) -> E2EForCausalLM:
    return small_e2e(**{**FD_MODEL, **overrides}).eval()


def _no_ttt(**overrides: object) -> dict:
    return {**overrides, "inner_lr": 0.0, "inner_lr_learnable": False}


# the release's block without what the Llama-style SWA block of the stack models lacks (QK-norm, post-norms, the
# interleaved RoPE, θ 500K), at the stack models' tiny MLP width: these weights load into the registry's "swa"
STACK_LIKE = {
    "qk_norm": False,
    "post_norm": False,
    "rope_pairing": "half",
    "rope_theta": 10000.0,
    "intermediate_size": 172,
}


def _cache_tensors(cache: E2ECache) -> list[Tensor]:
    out: list[Tensor] = []

    def walk(tree: object) -> None:
        if isinstance(tree, Tensor):
            out.append(tree)
        elif isinstance(tree, tuple):
            for item in tree:
                walk(item)

    walk((tuple(cache.blocks), cache.open))
    return out


# ---------------------------------------------------------------------------------------------------- structure


def test_the_125m_preset_is_the_release_shape_with_prime_mlps_in_the_last_quarter() -> None:
    config = make_config("ttt-e2e", "125m")
    assert (config.num_updated_layers, config.first_updated_layer) == (3, 9)  # the release's suffix_len 3
    assert config.intermediate_size == config.updated_intermediate_size == config.prime_intermediate_size == 1664
    assert (config.sliding_window, config.mini_batch_size, config.rope_theta) == (8192, 1024, 500000.0)
    assert (config.qk_norm, config.post_norm, config.prime_position) == (True, True, "before_static")
    with torch.device("meta"):
        model = build("ttt-e2e", "125m")
    updated = [block.layer_idx for block in model.model.layers if block.prime is not None]
    assert updated == [9, 10, 11]
    assert model.model.layers[11].mlp.up_proj.out_features == 1664
    assert model.model.layers[11].prime.up.shape == (768, 1664)  # (in, out)
    assert model.model.layers[11].prime.log_lr is None  # the release's step size is fixed
    assert model.model.layers[11].attn.q_norm.weight.shape == (64,)  # per head
    with torch.device("meta"):
        learnable = build("ttt-e2e", "125m", inner_lr_learnable=True)
    assert learnable.model.layers[11].prime.log_lr.shape == (3,)  # ours: one step size per prime weight tensor
    assert make_config("ttt-e2e", "tiny").num_updated_layers == 1  # at least one
    assert E2EConfig(num_hidden_layers=24).num_updated_layers == 6
    assert E2EConfig(num_hidden_layers=4, updated_fraction=1.0).first_updated_layer == 0


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"mini_batch_size": 0}, ["mini_batch_size", "0"]),
        ({"sliding_window": -2}, ["sliding_window", "-2"]),
        ({"updated_fraction": 0.0}, ["updated_fraction", "(0, 1]"]),
        ({"updated_fraction": 1.5}, ["updated_fraction", "1.5"]),
        ({"inner_lr": -0.1}, ["inner_lr", "-0.1"]),
        ({"inner_lr": 0.0, "inner_lr_learnable": True}, ["inner_lr", "inner_lr_learnable=False"]),
        ({"prime_position": "middle"}, ["prime_position", "'before_static'", "'middle'"]),
        ({"loss_reduction": "sum"}, ["loss_reduction", "'mini_batch'"]),
        ({"rope_pairing": "complex"}, ["rope_pairing", "'interleaved'"]),
        ({"qk_norm": 1}, ["qk_norm"]),
        ({"inner_grad_clip": 0.0}, ["inner_grad_clip", "0.0"]),
        ({"meta_gradient": "second"}, ["meta_gradient", "'exact'", "'second'"]),
        ({"num_attention_heads": 3}, ["num_attention_heads", "3"]),
        ({"short_conv": "yes"}, ["short_conv", "True or False", "'yes'"]),
        ({"conv_kernel": 0}, ["conv_kernel", "positive integer", "0"]),
    ],
)
def test_bad_config_values_raise_clear_errors(overrides: dict, needles: list[str]) -> None:
    with pytest.raises(ValueError, match="E2EConfig") as info:
        E2EConfig(**{"hidden_size": 64, "num_attention_heads": 4, **overrides})
    assert all(needle in str(info.value) for needle in needles), str(info.value)


def test_the_short_conv_is_off_by_default_and_adds_only_its_own_parameters() -> None:
    plain, conv = _e2e(), _e2e(short_conv=True, conv_kernel=3)
    assert not plain.config.short_conv
    assert not any("conv" in name for name in plain.state_dict())  # the release's state dict, as before
    assert all(block.conv is None and block.conv_norm is None for block in plain.model.layers)
    added = set(conv.state_dict()) - set(plain.state_dict())
    assert added == {f"model.layers.{i}.{p}" for i in (0, 1) for p in ("conv_norm.weight", "conv.weight", "conv.bias")}
    assert conv.model.layers[1].conv.weight.shape == (64, 3)


def test_bad_calls_raise_clear_errors() -> None:
    model = _e2e()
    ids = random_ids(1, 6)
    with pytest.raises(ValueError, match="input_ids"):
        model(inputs_embeds=torch.randn(1, 6, 64, dtype=torch.float64))
    with pytest.raises(TypeError, match="E2ECache"):
        model(ids, past_key_values=output_cache(build("swa", "tiny")(ids, use_cache=True)))
    with pytest.raises(TypeError, match="lm_head"):
        model.model(ids)
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(ids, attention_mask=torch.tensor([[0, 1, 1]]))  # shorter than the input


# ---------------------------------------------------------------------------------------------------- inner step


def _split_losses(logits: Tensor, ids: Tensor, b: int) -> tuple[Tensor, Tensor]:
    """Mean next-token loss of mini-batch 0 (targets 1…b) and of mini-batch 1 (targets b+1…2b−1)."""
    nll = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
    return nll[:b].mean(), nll[b:].mean()


def test_one_inner_step_changes_the_next_mini_batch_loss_as_its_gradient_predicts() -> None:
    # Mini-batch 1 repeats mini-batch 0 (beyond the window of 2), so the step on mini-batch 0 should help it.
    b = 8
    kw = {"sliding_window": 2, "mini_batch_size": b, "inner_grad_clip": None, "initializer_range": 0.1}
    first = random_ids(1, b, seed=5)
    ids = torch.cat([first, first], dim=1)
    frozen = _e2e(**_no_ttt(**kw))
    prime = frozen.model.layers[1].prime
    weights = [prime.gate, prime.up, prime.down]
    # with lr 0, W_1 = W_0: the gradients below are the inner gradient g_0 and the gradient of the next loss at W_1
    loss0, loss1 = _split_losses(frozen(ids).logits, ids, b)
    g0 = torch.autograd.grad(loss0, weights, retain_graph=True)
    g1 = torch.autograd.grad(loss1, weights)
    predicted_slope = -sum(float((a * c).sum()) for a, c in zip(g0, g1, strict=True))  # d loss1 / d lr at 0
    assert predicted_slope < 0  # the step on mini-batch 0 lowers the loss on its repetition

    def next_loss(lr: float) -> float:
        model = _e2e(**{**kw, "inner_lr": lr, "inner_lr_learnable": False})
        model.load_state_dict(frozen.state_dict())
        with torch.no_grad():
            return float(_split_losses(model(ids).logits, ids, b)[1])

    base, eps = next_loss(0.0), 1e-4
    assert base == pytest.approx(loss1.item(), rel=1e-12)
    assert (next_loss(eps) - base) / eps == pytest.approx(predicted_slope, rel=1e-3)
    assert next_loss(5.0) < base - 0.01  # and a real step helps


def test_first_mini_batch_uses_w0_and_the_last_target_is_the_next_mini_batch_first_token() -> None:
    ids = random_ids(1, 9)
    frozen, learning = _e2e(**_no_ttt()), _e2e()
    learning.load_state_dict(frozen.state_dict(), strict=False)  # same weights; only the step size differs
    with torch.no_grad():
        a, c = frozen(ids).logits, learning(ids).logits
        # the step after mini-batch 0 needs token 4 (its last target): with 4 tokens no step is taken yet
        assert torch.equal(learning(ids[:, :4]).logits, frozen(ids[:, :4]).logits)
        changed = learning(torch.cat([ids[:, :4], (ids[:, 4:5] + 1) % 512, ids[:, 5:]], dim=1)).logits
    assert rel_err(c[:, :4], a[:, :4]) < TOL64  # mini-batch 0 reads W_0
    assert rel_err(c[:, 4:], a[:, 4:]) > 1e-3  # later ones read W_1
    # token 4 is the target of position 3: changing it changes W_1, hence position 5 onwards ...
    assert rel_err(changed[:, 5:], c[:, 5:]) > 1e-4


def test_each_sequence_learns_only_from_itself() -> None:
    model = _e2e()
    ids = random_ids(3, 17)
    with torch.no_grad():
        together = model(ids).logits
        alone = torch.cat([model(ids[i : i + 1]).logits for i in range(3)])
    assert rel_err(together, alone) < TOL64


def _block(settings: dict) -> dict:
    """The attention-block settings of ``settings`` (the registry's swa has the release's block by default)."""
    return {k: settings[k] for k in ("qk_norm", "post_norm", "rope_pairing", "rope_theta")}


def test_inner_lr_zero_is_the_swa_backbone_with_the_same_weights() -> None:
    # same widths everywhere, prime MLPs' output projection at 0: the plain SWA model of the registry
    dims = {"sliding_window": 5, "attention_block_size": 4, **_block(STACK_LIKE)}
    e2e = _e2e(**_no_ttt(**STACK_LIKE))
    torch.nn.init.zeros_(e2e.model.layers[1].prime.down)
    swa = build("swa", "tiny", match_params=False, **dims).double().eval()
    swa.load_state_dict({k: v for k, v in e2e.state_dict().items() if ".prime." not in k}, strict=True)
    ids = random_ids(2, 23)
    with torch.no_grad():
        assert rel_err(e2e(ids).logits, swa(ids).logits) < 1e-12


def test_inner_lr_zero_adds_the_prime_mlp_with_its_initial_weights() -> None:
    # the prime MLP's effect computed directly: a hook adds x + SwiGLU(RMSNorm(x); W_0) to the SWA block output
    e2e = _e2e(**_no_ttt(**STACK_LIKE, prime_position="after_static"))
    swa = build("swa", "tiny", match_params=False, sliding_window=5, attention_block_size=4, **_block(STACK_LIKE))
    swa = swa.double().eval()
    swa.load_state_dict({k: v for k, v in e2e.state_dict().items() if ".prime." not in k}, strict=True)
    prime = e2e.model.layers[1].prime

    def add_prime(module: torch.nn.Module, args: tuple, output: tuple) -> tuple:
        x, cache = output
        h = prime.norm(x)
        return x + (F.silu(h @ prime.gate) * (h @ prime.up)) @ prime.down, cache

    swa.model.layers[1].register_forward_hook(add_prime)
    ids = random_ids(2, 23)
    with torch.no_grad():
        assert rel_err(e2e(ids).logits, swa(ids).logits) < 1e-12
        learning = _e2e(**STACK_LIKE, prime_position="after_static")
        learning.load_state_dict(e2e.state_dict(), strict=False)
        assert rel_err(learning(ids).logits, swa(ids).logits) > 1e-3  # with lr > 0 it is not the backbone


# ---------------------------------------------------------------------------------------------------- meta-learning

FD_COORDS = [
    ("model.layers.2.prime.gate", (1, 2)),  # W_0 of both updated blocks
    ("model.layers.2.prime.up", (0, 0)),
    ("model.layers.3.prime.down", (3, 5)),
    ("model.layers.2.prime.log_lr", (0,)),  # the inner step sizes
    ("model.layers.3.prime.log_lr", (2,)),
    ("model.layers.3.attn.q_proj.weight", (1, 1)),  # a static parameter of an updated block
    ("model.layers.0.mlp.up_proj.weight", (2, 3)),  # a block below the updated ones
]


def _grad_and_fd(model: E2EForCausalLM, ids: Tensor, coords: list) -> list[tuple[float, float]]:
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    params = dict(model.named_parameters())
    out = []
    eps = 1e-5
    for name, idx in coords:
        p = params[name]
        with torch.no_grad():
            old = float(p[idx])
            p[idx] = old + eps
            plus = float(model(ids, labels=ids).loss)
            p[idx] = old - eps
            minus = float(model(ids, labels=ids).loss)
            p[idx] = old
        out.append((float(p.grad[idx]), (plus - minus) / (2 * eps)))
    return out


@pytest.mark.parametrize("clip", [None, 0.05], ids=["no-clip", "clip-active"])
def test_outer_gradient_equals_finite_differences_of_the_outer_loss(clip: float | None) -> None:
    ids = random_ids(2, 13, seed=3) % 64  # 3 inner steps (after tokens 4, 8, 12)
    model = _fd_model(inner_grad_clip=clip)
    for (name, idx), (grad, fd) in zip(FD_COORDS, _grad_and_fd(model, ids, FD_COORDS), strict=True):
        assert grad == pytest.approx(fd, rel=1e-6, abs=1e-10), (name, idx)
    if clip is not None:  # the clip was active: the loss differs from the unclipped model's
        with torch.no_grad():
            assert abs(float(model(ids, labels=ids).loss) - float(_fd_model()(ids, labels=ids).loss)) > 1e-4


def test_outer_gradient_through_the_short_conv_equals_finite_differences() -> None:
    # the conv of an updated block sits inside every inner step (its gradient goes through the steps); a lower
    # block's conv feeds the inner loop's input
    ids = random_ids(2, 13, seed=3) % 64
    coords = [*FD_COORDS, ("model.layers.3.conv.weight", (1, 2)), ("model.layers.0.conv.bias", (4,))]
    model = _fd_model(short_conv=True)
    for (name, idx), (grad, fd) in zip(coords, _grad_and_fd(model, ids, coords), strict=True):
        assert grad == pytest.approx(fd, rel=1e-6, abs=1e-10), (name, idx)


def test_first_order_meta_gradient_misses_the_second_order_terms() -> None:
    # the finite-difference test above can fail: dropping the gradient of the gradient changes the result
    ids = random_ids(2, 13, seed=3) % 64
    errors = [
        abs(grad - fd) / abs(fd) for grad, fd in _grad_and_fd(_fd_model(meta_gradient="first_order"), ids, FD_COORDS)
    ]
    assert max(errors) > 0.2, errors  # measured: up to 4.4, i.e. far outside the 1e-6 of the exact gradient


def test_twenty_adamw_steps_on_a_repeated_sequence_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = build("ttt-e2e", "tiny", sliding_window=8, mini_batch_size=4).train()
    ids = random_ids(1, 12, seed=7).repeat(2, 3)  # (2, 36): one random 12-token phrase, three times
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 1.0, losses


def test_training_with_the_short_conv_reaches_every_conv_weight() -> None:
    model = _e2e(short_conv=True).train()
    ids = random_ids(2, 19)  # two inner steps and an open mini-batch
    model(ids, labels=ids).loss.backward()
    for block in model.model.layers:
        for weight in (block.conv.weight, block.conv.bias, block.conv_norm.weight):
            assert weight.grad is not None
            assert bool(torch.isfinite(weight.grad).all())
            assert bool(weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_of_the_lower_blocks_gives_the_same_gradients(reentrant: bool) -> None:
    ids = random_ids(2, 13, seed=3) % 64
    grads = []
    for checkpointing in (False, True):
        model = _fd_model().train()
        if checkpointing:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", FutureWarning
                )  # transformers 5 renames it activation_checkpointing_enable
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
            assert model.model.gradient_checkpointing
        model(ids, labels=ids).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel_err(grads[1], grads[0]) < 1e-12


# ---------------------------------------------------------------------------------------------------- inference


@pytest.mark.parametrize("short_conv", [False, True], ids=["plain", "short-conv"])
@pytest.mark.parametrize(
    "lengths",
    [[8, 8, 8, 8, 6], [16, 16, 6], [3, 5, 9, 1, 1, 19], [1] * 38],
    ids=["b", "2b", "anywhere", "token-by-token"],
)
def test_prefill_in_pieces_equals_one_call(lengths: list[int], short_conv: bool) -> None:
    # 38 tokens, b = 8: the pieces cross open mini-batches, whose steps recompute the blocks from their start state
    model = _e2e(mini_batch_size=8, sliding_window=6, short_conv=short_conv)
    ids = random_ids(2, 38)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    assert rel_err(logits_in_pieces(model, ids, lengths), full) < TOL64


@pytest.mark.parametrize("chunk", [8, 24, 5])
def test_streaming_prefill_then_generation_equals_one_call(chunk: int) -> None:
    model = _e2e(mini_batch_size=8, sliding_window=6, eos_token_id=None)
    ids = random_ids(1, 41)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits.double()
        result = prefill(model, ids[:, :40], chunk_size=chunk)
        after = model(ids[:, 40:], **cache_argument(result.past_key_values), use_cache=True).logits
    expected = F.cross_entropy(full[0, :39], ids[0, 1:40], reduction="none")
    torch.testing.assert_close(result.token_loss[0].double(), expected, rtol=1e-5, atol=1e-5)
    assert rel_err(after[:, -1], full[:, 40]) < TOL64
    generated = model.generate(ids[:, :40], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 45)


def _conv_shape(state: E2EBlockState) -> tuple[int, ...] | None:
    return None if state.conv is None else tuple(state.conv.shape)


@pytest.mark.parametrize("short_conv", [False, True], ids=["plain", "short-conv"])
def test_the_cache_does_not_grow_with_the_context(short_conv: bool) -> None:
    model = _e2e(mini_batch_size=8, sliding_window=6, short_conv=short_conv)
    conv_shape = (1, 3, 64) if short_conv else None  # the conv's last kernel − 1 inputs, or nothing without it
    sizes = []
    for length in (48, 96, 200):  # multiples of b: a complete mini-batch is open at the end of each
        with torch.no_grad():
            cache = prefill(model, random_ids(1, length), chunk_size=32, token_loss=False).past_key_values
        # storage, not numel: a view into the prefill's activations would show here
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in _cache_tensors(cache)}
        sizes.append(sum(storages.values()))
        assert cache.open is not None
        assert cache.open.ids.shape == (1, 8)  # at most b open tokens
        for block in cache.blocks:
            assert isinstance(block, E2EBlockCache)
            assert block.state.attn.keys.shape[1] == block.state.attn.values.shape[1] == 5  # window − 1
            assert _conv_shape(block.state) == conv_shape
        updated = cache.blocks[1]
        assert updated.fast is not None
        assert [w.shape for w in updated.fast] == [(1, 64, 136), (1, 64, 136), (1, 136, 64)]
        assert updated.start_state.attn.keys.shape[1] == 5
        assert _conv_shape(updated.start_state) == conv_shape
    assert sizes[0] == sizes[1] == sizes[2]


@pytest.mark.parametrize("short_conv", [False, True], ids=["plain", "short-conv"])
def test_inference_mode_equals_no_grad_and_continues_the_same_cache(short_conv: bool) -> None:
    # the second call's steps recompute the blocks from states made under inference_mode (the conv's included)
    model = _e2e(short_conv=short_conv)
    ids = random_ids(2, 19)
    with torch.no_grad():
        expected = model(ids).logits
    with torch.inference_mode():
        first = model(ids[:, :10], use_cache=True)
        second = model(ids[:, 10:], past_key_values=output_cache(first), use_cache=True)
    assert rel_err(torch.cat([first.logits, second.logits], dim=1), expected) < TOL64


def test_grad_mode_gives_the_inference_values_and_a_graph_into_w0() -> None:
    model = _e2e()
    ids = random_ids(2, 19)
    with torch.no_grad():
        expected = model(ids).logits
    logits = model(ids).logits
    assert rel_err(logits.detach(), expected) < TOL64
    (grad,) = torch.autograd.grad(logits[:, 8:].sum(), model.model.layers[1].prime.gate)
    assert bool(grad.abs().sum() > 0)  # later mini-batches depend on W_0, through the steps too


def test_logits_to_keep_and_hidden_states() -> None:
    model = _e2e()
    ids = random_ids(2, 19)
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        last = model(ids, logits_to_keep=3).logits
        picked = model(ids, logits_to_keep=torch.tensor([17, 2, 9])).logits
    # computed on fewer rows, the head's matmul may round differently: equal to float64 precision
    assert last.shape == picked.shape == (2, 3, 512)
    assert rel_err(last, full.logits[:, -3:]) < 1e-14
    assert rel_err(picked, full.logits[:, [17, 2, 9]]) < 1e-14
    assert len(full.hidden_states) == 3  # embeddings + 2 blocks
    assert all(h.shape == (2, 19, 64) for h in full.hidden_states)


def test_bfloat16_model_keeps_its_fast_weights_in_float32() -> None:
    model = _e2e(torch.bfloat16)
    ids = random_ids(2, 19)
    out = model(ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.layers[1].prime.gate.grad.dtype == torch.bfloat16
    with torch.no_grad():
        cache = output_cache(model(ids, use_cache=True))
    assert all(w.dtype == torch.float32 for w in cache.blocks[1].fast)


# ---------------------------------------------------------------------------------------------------- benchmark


def test_bench_e2e_measures_tokens_per_second_against_swa(tmp_path: Path) -> None:
    from tttlm.bench.e2e import run_e2e_bench
    from tttlm.cli import main

    records = run_e2e_bench(sizes=("tiny",), seq=16, window=8, mini_batch_sizes=(4,), repeats=1, warmup=0)
    assert [(r.arch, r.mini_batch, r.meta_gradient) for r in records] == [
        ("swa", None, None),
        ("ttt-e2e", 4, "exact"),
        ("ttt-e2e", 4, "first_order"),
    ]
    assert records[0].ratio_to_swa == 1.0
    assert all(r.tokens_per_s > 0 and r.tokens_per_s == 16 / r.seconds for r in records)
    # about equal size: swa is matched to TTT-Linear, ttt-e2e keeps the release's widths
    assert abs(records[1].parameters / records[0].parameters - 1) < 0.1
    path = tmp_path / "e2e.json"
    argv = ["bench", "e2e", "--sizes", "tiny", "--seq", "12", "--window", "4", "--mini-batch-sizes", "4"]
    assert main([*argv, "--meta-gradients", "exact", "--repeats", "1", "--warmup", "0", "--json", str(path)]) == 0
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == "e2e"
    assert [r["arch"] for r in payload["records"]] == ["swa", "ttt-e2e"]
    assert main([*argv, "--seq", "0", "--json", str(path)]) == 2
