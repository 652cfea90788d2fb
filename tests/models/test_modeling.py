"""TTTForCausalLM forward: streaming exactness, every config option, gradients, checkpointing, bf16, input checks."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from model_testing import (
    VARIANT_IDS,
    VARIANTS,
    logits_in_pieces,
    make_model,
    prefill_then_decode,
    random_ids,
    rel_err,
)

from tttlm import TTTCache
from tttlm.layers.ttt import TTTLayerCache
from tttlm.models.hf_compat import output_cache
from tttlm.models.ttt.cache import TTTBlockCache
from tttlm.ops.state import TTTState

# float64: the dual form (prefill) and the step path (decode) are the same maths summed in different orders, so
# they agree to a few float64 roundings (measured ~5e-16 relative).
TOL64 = 1e-9
# float32: the same reorderings cost ~1e-7 per operation (unit roundoff 6e-8), amplified by the inner LayerNorm
# (forward and backward divide by a per-token std) and by 2 blocks; measured ≤ 1e-6 relative. 2e-5 keeps a margin
# and is still > 1000x below the error of a wrong carried state (see test_decode_tests_are_sensitive).
TOL32 = 2e-5


@pytest.mark.parametrize(("layer_type", "backbone"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(("mini_batch_size", "prefill", "total"), [(4, 7, 23), (16, 5, 37), (1, 3, 9)])
def test_incremental_decoding_equals_full_forward_float64(
    layer_type: str, backbone: str, mini_batch_size: int, prefill: int, total: int
) -> None:
    model = make_model(torch.float64, layer_type=layer_type, backbone=backbone, mini_batch_size=mini_batch_size)
    ids = random_ids(2, total)
    with torch.no_grad():
        full = model(ids).logits
    assert rel_err(prefill_then_decode(model, ids, prefill), full) < TOL64


@pytest.mark.parametrize(("layer_type", "backbone"), VARIANTS, ids=VARIANT_IDS)
def test_incremental_decoding_equals_full_forward_float32(layer_type: str, backbone: str) -> None:
    model = make_model(torch.float32, layer_type=layer_type, backbone=backbone)
    ids = random_ids(2, 23)
    with torch.no_grad():
        full = model(ids).logits
    assert rel_err(prefill_then_decode(model, ids, 6), full) < TOL32


def test_decode_tests_are_sensitive() -> None:
    """Dropping the open mini-batch's pending gradient sums must change the logits far beyond the tolerances."""
    model = make_model(torch.float64)
    ids = random_ids(2, 23)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :7], use_cache=True)
        cache = output_cache(out)
        assert cache.blocks[0].ttt.state.position == 3  # 7 = 4 + 3: a mini-batch is open
        for i, block in enumerate(cache.blocks):
            state = block.ttt.state
            zeros = tuple(torch.zeros_like(g) for g in state.grad_sums)
            cache.blocks[i] = TTTBlockCache(TTTLayerCache(TTTState(state.weights, zeros, state.position)), None)
        rest = [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(7, 23)]
    assert rel_err(torch.cat([out.logits, *rest], dim=1), full) > 1e-2


@pytest.mark.parametrize(("layer_type", "backbone"), VARIANTS, ids=VARIANT_IDS)
def test_chunked_prefill_equals_one_forward(layer_type: str, backbone: str) -> None:
    model = make_model(torch.float64, layer_type=layer_type, backbone=backbone)
    ids = random_ids(3, 30)
    with torch.no_grad():
        full = model(ids).logits
    chunked, cache = logits_in_pieces(model, ids, [3, 6, 1, 9, 2, 9])
    assert rel_err(chunked, full) < TOL64
    assert cache.get_seq_length() == 30
    assert cache.batch_size == 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"backbone": "transformer", "pre_conv": True},
        {"backbone": "mamba", "pre_conv": False},
        {"use_gate": False},
        {"backbone": "mamba", "use_gate": False, "layer_type": "mlp"},
        {"ttt_form": "primal"},
        {"ttt_form": "primal", "layer_type": "mlp", "backbone": "mamba"},
        {"ttt_base_lr": 3.0, "layer_type": "mlp"},
        {"tie_word_embeddings": False},
        {"conv_kernel": 2, "backbone": "mamba"},
        {"rope_theta": 500.0, "mini_batch_size": 8, "rms_norm_eps": 1e-3},
        {"ttt_inner_norm": False},
        {"ttt_learn_init": False, "ttt_learn_lr": False},
        {"ttt_inner_norm": False, "ttt_learn_init": False, "layer_type": "mlp", "backbone": "mamba"},
        {"ttt_inner_norm": False, "ttt_learn_init": False, "ttt_learn_lr": False, "ttt_form": "primal"},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_options_stream_exactly(overrides: dict) -> None:
    model = make_model(torch.float64, **overrides)
    ids = random_ids(2, 19)
    with torch.no_grad():
        full = model(ids).logits
    assert rel_err(prefill_then_decode(model, ids, 6), full) < TOL64
    assert rel_err(logits_in_pieces(model, ids, [5, 9, 5])[0], full) < TOL64


def test_options_build_what_they_say() -> None:
    transformer = make_model(backbone="transformer")
    mamba = make_model(backbone="mamba")
    names = {n for n, _ in transformer.named_parameters()}
    mamba_names = {n for n, _ in mamba.named_parameters()}
    assert "model.layers.0.ttt.q_proj.weight" in names
    assert "model.layers.0.conv.weight" not in names
    assert "model.layers.0.ttt.qk_proj.weight" in mamba_names
    assert "model.layers.0.conv.weight" in mamba_names
    assert "model.layers.0.ttt.conv_q.weight" in mamba_names
    assert not hasattr(make_model(use_gate=False).model.layers[0].ttt, "g_proj")
    assert make_model(layer_type="mlp").model.layers[0].ttt.W2.shape == (4, 64, 16)
    assert make_model(conv_kernel=3, backbone="mamba").model.layers[0].conv.weight.shape == (64, 3)
    custom = make_model(rms_norm_eps=1e-3, rope_theta=500.0, mini_batch_size=8, ttt_base_lr=0.7)
    assert custom.model.norm.eps == 1e-3
    assert custom.model.layers[1].ffn_norm.eps == 1e-3
    ttt = custom.model.layers[1].ttt
    assert (ttt.rope_theta, ttt.mini_batch_size, ttt.base_lr) == (500.0, 8, 0.7)
    untied = make_model(tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    tied = make_model()
    assert tied.lm_head.weight is tied.model.embed_tokens.weight


@pytest.mark.parametrize("layer_type", ["linear", "mlp"])
def test_primal_and_dual_forms_give_the_same_logits(layer_type: str) -> None:
    ids = random_ids(2, 21)
    with torch.no_grad():
        dual = make_model(layer_type=layer_type, backbone="mamba", ttt_form="dual")(ids).logits
        primal = make_model(layer_type=layer_type, backbone="mamba", ttt_form="primal")(ids).logits
    assert rel_err(primal, dual) < TOL64


@pytest.mark.parametrize(("layer_type", "paper_lr"), [("linear", 1.0), ("mlp", 0.1)])
def test_ttt_base_lr(layer_type: str, paper_lr: float) -> None:
    default = make_model(layer_type=layer_type)
    assert default.model.layers[0].ttt.base_lr == paper_lr
    explicit = make_model(layer_type=layer_type, ttt_base_lr=paper_lr)
    other = make_model(layer_type=layer_type, ttt_base_lr=paper_lr * 4)
    assert other.model.layers[1].ttt.base_lr == paper_lr * 4
    ids = random_ids(1, 12)
    with torch.no_grad():
        assert torch.equal(default(ids).logits, explicit(ids).logits)
        assert rel_err(other(ids).logits, default(ids).logits) > 1e-3


def test_mini_batch_size_changes_the_model() -> None:
    ids = random_ids(1, 12)
    with torch.no_grad():
        b4 = make_model(mini_batch_size=4)(ids).logits
        b16 = make_model(mini_batch_size=16)(ids).logits
    # the first mini-batch is the same computation; after it, b = 4 has updated W and b = 16 has not
    assert rel_err(b16[:, :4], b4[:, :4]) < TOL64
    assert rel_err(b16[:, 4:], b4[:, 4:]) > 1e-3


@pytest.mark.parametrize(("layer_type", "backbone"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("tie", [True, False])
def test_every_parameter_gets_a_gradient(layer_type: str, backbone: str, tie: bool) -> None:
    model = make_model(torch.float32, layer_type=layer_type, backbone=backbone, tie_word_embeddings=tie).train()
    ids = random_ids(2, 12)  # >= 2 mini-batches of 4: every token_offset position is used
    model(ids, labels=ids).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing


def test_loss_shifts_labels_and_ignores_minus_100() -> None:
    model = make_model()
    ids = random_ids(2, 10)
    labels = ids.clone()
    labels[0, 4] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.allclose(out.loss, expected, rtol=1e-12)


@pytest.mark.parametrize("backbone", ["transformer", "mamba"])
@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_grads(backbone: str, reentrant: bool) -> None:
    model = make_model(torch.float64, backbone=backbone, layer_type="mlp").train()
    ids = random_ids(2, 14)
    loss = model(ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    calls = []
    hooks = [block.register_forward_pre_hook(lambda *_: calls.append(1)) for block in model.model.layers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames it activation_checkpointing_enable
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert model.model.gradient_checkpointing
    loss_ckpt = model(ids, labels=ids).loss
    loss_ckpt.backward()
    for hook in hooks:
        hook.remove()
    assert len(calls) == 2 * len(model.model.layers)  # every block ran again in the backward pass
    assert torch.equal(loss, loss_ckpt)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-12, atol=1e-15, msg=name)


@pytest.mark.parametrize(("layer_type", "backbone"), VARIANTS, ids=VARIANT_IDS)
def test_bf16_autocast_is_close_to_float32(layer_type: str, backbone: str) -> None:
    model = make_model(torch.float32, layer_type=layer_type, backbone=backbone)
    ids = random_ids(2, 19)
    with torch.no_grad():
        reference = model(ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16
    assert torch.isfinite(out.loss)
    # bf16 keeps 8 significant bits (unit roundoff 2^-9 ≈ 2e-3); the logits go through ~10 bf16 matmuls of depth
    # 64-172 per block (the inner TTT loop itself stays float32), which measured 1-2% relative (Frobenius).
    # 6% allows for that with margin; a broken bf16 path (e.g. the inner state in bf16 or a dtype mix-up) is
    # far off or raises.
    error = float((out.logits.float() - reference).norm() / reference.norm())
    assert error < 0.06


def test_bf16_autocast_backward_runs() -> None:
    model = make_model(torch.float32, backbone="mamba").train()
    ids = random_ids(2, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_inputs_embeds_hidden_states_and_tuple_output() -> None:
    model = make_model()
    ids = random_ids(2, 9)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        from_embeds = model(inputs_embeds=model.model.embed_tokens(ids)).logits
        as_tuple = model(ids, labels=ids, use_cache=True, return_dict=False)
        last = model(ids, logits_to_keep=1).logits
    assert torch.equal(from_embeds, out.logits)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.hidden_states[0].shape == (2, 9, 64)
    loss, logits, cache = as_tuple
    assert loss.dim() == 0
    assert torch.equal(logits, out.logits)
    assert isinstance(cache, TTTCache)
    assert rel_err(last, out.logits[:, -1:]) < TOL64  # the same rows through a smaller matmul


def test_cache_defaults() -> None:
    model = make_model()
    ids = random_ids(1, 5)
    with torch.no_grad():
        assert isinstance(output_cache(model(ids)), TTTCache)  # config.use_cache in eval mode
        assert output_cache(model(ids, use_cache=False)) is None
        model.train()
        assert output_cache(model(ids)) is None  # no cache by default while training


def test_cache_batch_ops_and_detach() -> None:
    model = make_model()
    ids = random_ids(3, 10)
    with torch.no_grad():
        cache = output_cache(model(ids[:, :6], use_cache=True))
        expected = model(ids).logits[:, 6:]
    assert cache.detach().get_seq_length() == 6
    cache.reorder_cache(torch.tensor([2, 0]))
    with torch.no_grad():
        reordered = model(ids[[2, 0], 6:], past_key_values=cache).logits
    assert rel_err(reordered, expected[[2, 0]]) < TOL64
    cache.batch_repeat_interleave(2)
    assert cache.batch_size == 4
    cache.crop(0)
    with pytest.raises(ValueError, match="cannot remove"):
        cache.crop(-1)
    cache.reset()
    assert cache.batch_size is None
    assert cache.get_seq_length() == 0


# (input_ids, exception, strings the message must contain)
BAD_IDS = [
    (torch.tensor([[1, 2, 512]]), ValueError, ["input_ids", "512", "vocab_size=512"]),
    (torch.tensor([[1, -1, 3]]), ValueError, ["input_ids", "-1"]),
    (torch.tensor([[1.0, 2.0]]), TypeError, ["input_ids", "torch.float32", "inputs_embeds"]),
    (torch.tensor([[True, False]]), TypeError, ["input_ids", "torch.bool"]),
    (torch.tensor([1, 2, 3]), ValueError, ["input_ids", "(batch, seq)", "(3,)", "unsqueeze"]),
    (torch.ones(1, 2, 3, dtype=torch.long), ValueError, ["input_ids", "(1, 2, 3)"]),
    (torch.ones(1, 0, dtype=torch.long), ValueError, ["input_ids", "empty"]),
    ([[1, 2, 3]], TypeError, ["input_ids", "list"]),
]


@pytest.mark.parametrize(
    ("ids", "error", "needles"),
    BAD_IDS,
    ids=["too-large", "negative", "float", "bool", "rank-1", "rank-3", "empty", "list"],
)
def test_bad_input_ids(ids: object, error: type[Exception], needles: list[str]) -> None:
    model = make_model()
    with pytest.raises(error) as info:
        model(ids)
    assert all(needle in str(info.value) for needle in needles), str(info.value)


def test_bad_call_arguments() -> None:
    model = make_model()
    ids = random_ids(2, 5)
    embeds = model.model.embed_tokens(ids)
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model(ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model()
    with pytest.raises(ValueError, match="inputs_embeds must have shape"):
        model(inputs_embeds=embeds[..., :10])
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(ids, attention_mask=torch.ones(3, 5))  # another batch size
    with pytest.raises(TypeError, match="past_key_values must be a TTTCache"):
        model(ids, past_key_values=((torch.zeros(1),),))
    cache = output_cache(model(ids, use_cache=True))
    with pytest.raises(ValueError, match="batch of 2 sequences but the input has 1"):
        model(ids[:1], past_key_values=cache)
    with pytest.raises(ValueError, match="3 layers but the model has 2"):
        model(ids, past_key_values=TTTCache(3))
    # an all-ones mask (what tokenizers return) is fine
    assert model(ids, attention_mask=torch.ones_like(ids)).logits.shape == (2, 5, 512)
