"""``E2EConfig``: the configuration of TTT-E2E, a sliding-window Transformer whose last blocks keep learning.

The defaults are the public release's (test-time-training/e2e, ``ttt/config.py`` and the ``*-e2e.yaml`` recipes):
every sub-block pre- and post-normed (``h ← h + post(f(pre(h)))``, RMSNorm without bias), per-head QK-norm before
an interleaved RoPE of base 500,000; in the last quarter of the blocks a prime SwiGLU before the static one, its
weights W updated at test time by plain SGD (step size 1, warmed up during pre-training, see
``train/inner_lr.py``) with the gradient clipped to global norm 1 over all prime weights, one step per mini-batch
of ``mini_batch_size`` tokens, on the model's own next-token loss with BOS targets masked
(see ``models/e2e/modeling.py``). What is ours and not the release's is an option, listed in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math
from typing import Any

from tttlm.layers.rope import ROPE_PAIRINGS
from tttlm.models.base import LMConfig, check_flags, choice, is_number, positive_int, positive_number

META_GRADIENTS = ("exact", "first_order")
# what a meta-training forward recomputes in the backward: the release's every inner step and lower block, or less;
# "auto" (the default): "all" on an accelerator, "none" on the CPU (see resolve_remat)
REMAT_MODES = ("all", "inner", "none")
REMATS = ("auto", *REMAT_MODES)
# where the prime MLP sits in an updated block: the release's order, or ours of earlier versions
PRIME_POSITIONS = ("before_static", "after_static")
# the outer loss: the release's mean over mini-batches of each mini-batch's mean, or the plain mean over tokens
LOSS_REDUCTIONS = ("mini_batch", "token")
# scaled RoPE variants of transformers' ROPE_INIT_FUNCTIONS that do not depend on the input length
SCALED_ROPE_TYPES = ("linear", "llama3", "yarn")

# The release's model sizes (``configs/model/<size>.yaml`` with the ``pretrain-<size>-e2e.yaml`` overrides: one
# MLP width for the static and the prime MLPs, window 8K, b = 1K, the last quarter of the blocks updated). Its
# vocabulary is Llama 3's (128,256); ours comes from the tokenizer the data was packed with. "tiny" (CI) keeps the
# shape: MLP width ≈ 2.17 × hidden (1664 / 768), window / b = 8, a quarter of the blocks (at least one) updated.
E2E_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 136,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "sliding_window": 64,
        "mini_batch_size": 8,
    },
    "125m": {"hidden_size": 768, "intermediate_size": 1664, "num_hidden_layers": 12, "num_attention_heads": 12},
    "350m": {"hidden_size": 1024, "intermediate_size": 2304, "num_hidden_layers": 24, "num_attention_heads": 16},
    "760m": {"hidden_size": 1536, "intermediate_size": 3328, "num_hidden_layers": 24, "num_attention_heads": 16},
    "1b": {"hidden_size": 2048, "intermediate_size": 4352, "num_hidden_layers": 24, "num_attention_heads": 32},
    "3b": {"hidden_size": 2560, "intermediate_size": 5632, "num_hidden_layers": 32, "num_attention_heads": 32},
}
RELEASE_VOCAB_SIZE = 128256


class E2EConfig(LMConfig):
    """Configuration of an ``E2EForCausalLM`` (model type ``"tttlm_e2e"``); the defaults are the release's 125m.

    Args:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads: as in ``TTTConfig`` (head dim
            hidden_size / heads, even for RoPE).
        intermediate_size: width of every SwiGLU MLP, static and prime (the release has one width).
        sliding_window: window k of the attention in every block (query i sees keys i − k < j ≤ i).
        attention_block_size: query rows per block of the blocked attention (None: max(window, 256)).
        mini_batch_size: b, tokens per inner step. The inner loss of a mini-batch is the mean next-token loss of
            its b positions, the last one's target being the first token of the next mini-batch (see
            ``models/e2e/modeling.py``), so b = 1 is online gradient descent.
        updated_fraction: fraction of the blocks, counted from the top, that carry an updated ("prime") MLP;
            ``num_updated_layers = ceil(fraction × num_hidden_layers)``, at least 1 (release: 1/4, its
            ``suffix_len``).
        qk_norm: per-head RMSNorm of queries and keys before RoPE (release: on).
        post_norm: an RMSNorm on the output of every sub-block before the residual add (release: on); the input
            of every sub-block is always normed (pre-norm).
        rope_pairing: "interleaved" (the release's complex-pair RoPE) or "half" (Llama's rotate-half).
        inner_lr: the inner SGD step size (release: 1; the initial value if learnable); 0 disables test-time
            training. During training the trainer may scale it (the release's warm-up, ``set_inner_lr_scale``).
        inner_grad_clip: clip each sequence's inner gradient to this global norm over all prime weights of all
            updated blocks before the step (release: 1.0); None: no clipping.
        mask_bos_targets: leave out of the inner and the outer loss every position whose target is
            ``bos_token_id`` (release: the data's loss mask, target ≠ BOS).
        loss_reduction: the outer loss of ``forward(labels=...)``: "mini_batch" (release: the mean over
            mini-batches of each mini-batch's mean over its counted positions) or "token" (the mean over tokens).
        meta_gradient: "exact" (training back-propagates through the inner gradients: gradient of gradient, as
            the release's ``jax.grad``) or "first_order" (inner gradients as constants; cheaper, biased; ours).
        remat: what a meta-training forward rematerialises in the backward instead of keeping (same values, less
            memory, more compute): "all" (release: ``jax.remat`` of every chunk of its inner loop and of every
            block below the updated ones, ``remat_prefix_block``): each inner step keeps only its inputs and
            outputs (fast weights, KV windows, logits) and each lower block only its input; "inner": the inner
            steps only; "none"; "auto" (ours, the default): "all" when the weights are on an accelerator, "none"
            on the CPU, where it costs 1.1-1.7x the step time (tttlm bench memory).
            ``gradient_checkpointing_enable()`` makes it "all" in training mode.
        prime_position: "before_static" (release) or "after_static" (ours, earlier versions).
        inner_lr_learnable: ours: learn one log step size per prime weight tensor (gate, up, down of every updated
            block) in the outer loop; needs ``inner_lr > 0``. Release: off (a fixed step size).
        updated_intermediate_size: ours: width of the static MLP in the updated blocks (None: intermediate_size).
        prime_intermediate_size: ours: width of the prime MLPs (None: intermediate_size).
        short_conv: ours: a sub-block ``h ← h + CausalConv(RMSNorm(h))`` (depthwise, causal, no post-norm) before
            the attention of every block: Zoology's short convolution, the recipe of the recall benchmarks
            (``tttlm eval mqar``), which the registry's ``short_conv=True`` gives every arch, so that TTT-E2E can be
            compared under it too. The release has no conv (off, the default: no conv parameters, its numerics).
        conv_kernel: kernel size of that conv (with ``short_conv``; the cache keeps its last kernel − 1 inputs).
        num_key_value_heads, head_dim, attention_qkv_bias, attention_o_bias, scaled_rope: for a model converted
            from a pretrained Transformer (``tttlm e2e-init``): grouped-query attention (None: one kv head per
            head), a head width other than hidden / heads, biases of the q/k/v and output projections, and a scaled
            RoPE given as transformers' ``rope_parameters`` of the source (``rope_type`` "linear", "llama3" or
            "yarn" with their values; None: plain RoPE of base ``rope_theta``). The release has none of these.
        rope_theta, rms_norm_eps, initializer_range, tie_word_embeddings, max_position_embeddings, use_cache,
            pad_token_id, bos_token_id, eos_token_id: as in ``TTTConfig`` (release: θ = 500,000, tied head).
    """

    model_type = "tttlm_e2e"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 768,
        intermediate_size: int = 1664,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        sliding_window: int = 8192,
        attention_block_size: int | None = None,
        mini_batch_size: int = 1024,
        updated_fraction: float = 0.25,
        qk_norm: bool = True,
        post_norm: bool = True,
        rope_pairing: str = "interleaved",
        inner_lr: float = 1.0,
        inner_grad_clip: float | None = 1.0,
        mask_bos_targets: bool = True,
        loss_reduction: str = "mini_batch",
        meta_gradient: str = "exact",
        remat: str = "auto",
        prime_position: str = "before_static",
        inner_lr_learnable: bool = False,
        updated_intermediate_size: int | None = None,
        prime_intermediate_size: int | None = None,
        short_conv: bool = False,
        conv_kernel: int = 4,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        attention_qkv_bias: bool = False,
        attention_o_bias: bool = False,
        scaled_rope: dict[str, Any] | None = None,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        max_position_embeddings: int = 131072,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        **kwargs: Any,
    ) -> None:
        owner = "E2EConfig"
        for name, value in (("sliding_window", sliding_window), ("mini_batch_size", mini_batch_size)):
            positive_int(owner, name, value)
        positive_int(owner, "conv_kernel", conv_kernel, example=4)
        for name, value in (
            ("attention_block_size", attention_block_size),
            ("updated_intermediate_size", updated_intermediate_size),
            ("prime_intermediate_size", prime_intermediate_size),
        ):
            if value is not None:
                positive_int(owner, name, value)
        if not is_number(updated_fraction) or not 0 < updated_fraction <= 1:
            raise ValueError(
                f"E2EConfig: updated_fraction must be a number in (0, 1] (the fraction of blocks, from the top, "
                f"whose prime MLP is updated at test time); got {updated_fraction!r}. The release uses 0.25."
            )
        if not is_number(inner_lr) or inner_lr < 0:
            raise ValueError(f"E2EConfig: inner_lr must be a finite number >= 0; got {inner_lr!r}. The release uses 1.")
        check_flags(
            owner,
            inner_lr_learnable=inner_lr_learnable,
            qk_norm=qk_norm,
            post_norm=post_norm,
            mask_bos_targets=mask_bos_targets,
            short_conv=short_conv,
        )
        if inner_lr_learnable and inner_lr == 0:
            raise ValueError(
                "E2EConfig: a learnable inner lr is stored as its logarithm, so inner_lr must be > 0 when "
                "inner_lr_learnable=True; for a model without test-time training pass inner_lr_learnable=False"
            )
        if inner_grad_clip is not None:
            positive_number(owner, "inner_grad_clip", inner_grad_clip)
        choice(owner, "meta_gradient", meta_gradient, META_GRADIENTS)
        choice(owner, "remat", remat, REMATS)
        choice(owner, "prime_position", prime_position, PRIME_POSITIONS)
        choice(owner, "loss_reduction", loss_reduction, LOSS_REDUCTIONS)
        choice(owner, "rope_pairing", rope_pairing, tuple(ROPE_PAIRINGS))
        check_flags(owner, attention_qkv_bias=attention_qkv_bias, attention_o_bias=attention_o_bias)
        for name, value in (("num_key_value_heads", num_key_value_heads), ("head_dim", head_dim)):
            if value is not None:
                positive_int(owner, name, value)
        if num_key_value_heads is not None and num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"E2EConfig: num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({num_key_value_heads})"
            )
        if scaled_rope is not None and (
            not isinstance(scaled_rope, dict) or scaled_rope.get("rope_type") not in SCALED_ROPE_TYPES
        ):
            raise ValueError(
                f"E2EConfig: scaled_rope must be None or transformers' rope_parameters with rope_type one of "
                f"{', '.join(SCALED_ROPE_TYPES)}; got {scaled_rope!r} (dynamic and longrope depend on the input "
                "length, which a streamed model does not know)"
            )

        self.sliding_window = sliding_window
        self.attention_block_size = attention_block_size
        self.mini_batch_size = mini_batch_size
        self.updated_fraction = float(updated_fraction)
        self.qk_norm = qk_norm
        self.post_norm = post_norm
        self.rope_pairing = rope_pairing
        self.inner_lr = float(inner_lr)
        self.inner_grad_clip = None if inner_grad_clip is None else float(inner_grad_clip)
        self.mask_bos_targets = mask_bos_targets
        self.loss_reduction = loss_reduction
        self.meta_gradient = meta_gradient
        self.remat = remat
        self.prime_position = prime_position
        self.inner_lr_learnable = inner_lr_learnable
        self.short_conv = short_conv
        self.conv_kernel = conv_kernel
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.attention_qkv_bias = attention_qkv_bias
        self.attention_o_bias = attention_o_bias
        self.scaled_rope = None if scaled_rope is None else dict(scaled_rope)
        # stored resolved, so a saved config.json states what the model has
        self.updated_intermediate_size = updated_intermediate_size or intermediate_size
        self.prime_intermediate_size = prime_intermediate_size or intermediate_size
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            rope_theta=rope_theta,
            rms_norm_eps=rms_norm_eps,
            initializer_range=initializer_range,
            tie_word_embeddings=tie_word_embeddings,
            max_position_embeddings=max_position_embeddings,
            use_cache=use_cache,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )

    @classmethod
    def from_preset(cls, size: str, **overrides: Any) -> E2EConfig:
        """The release's size ``size`` (``E2E_PRESETS``: 125m, 350m, 760m, 1b, 3b, and tiny), with overrides."""
        if size not in E2E_PRESETS:
            raise ValueError(f"unknown TTT-E2E preset {size!r}; choose one of {', '.join(map(repr, E2E_PRESETS))}")
        return cls(**{**E2E_PRESETS[size], **overrides})

    @property
    def num_updated_layers(self) -> int:
        """How many blocks, from the top, carry an updated prime MLP: ceil(fraction × layers), at least 1."""
        # the small tolerance keeps e.g. 0.25 × 12 at 3 whatever the float rounding
        return max(1, min(self.num_hidden_layers, math.ceil(self.updated_fraction * self.num_hidden_layers - 1e-9)))

    @property
    def first_updated_layer(self) -> int:
        """Index of the lowest updated block; the inner gradient never goes below its input."""
        return self.num_hidden_layers - self.num_updated_layers


def resolve_remat(remat: str, device_type: str) -> str:
    """The remat mode ``E2EConfig.remat`` means for weights on ``device_type`` ("auto": "none" on the CPU, else
    "all")."""
    if remat != "auto":
        return remat
    return "none" if device_type == "cpu" else "all"
