"""``E2EConfig``: the configuration of TTT-E2E, a sliding-window Transformer whose last blocks keep learning.

Every block is ``x + SWA(RMSNorm(x))``, ``x + SwiGLU(RMSNorm(x))``; the last ``updated_fraction`` of the blocks
(at least one) add ``x + PrimeSwiGLU(RMSNorm(x); W)``, whose weights W are updated at test time by SGD on the
model's own next-token loss, one step per mini-batch of ``mini_batch_size`` tokens (see ``models/e2e/modeling.py``).
"""

from __future__ import annotations

import math
from typing import Any

from tttlm.models.base import LMConfig, check_flags, is_number, positive_int, positive_number

META_GRADIENTS = ("exact", "first_order")


class E2EConfig(LMConfig):
    """Configuration of an ``E2EForCausalLM`` (model type ``"tttlm_e2e"``).

    Args:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads: as in ``TTTConfig`` (head dim
            hidden_size / heads, even for RoPE).
        intermediate_size: width of the static SwiGLU MLP of the blocks that are not updated.
        sliding_window: window k of the attention in every block (query i sees keys i − k < j ≤ i).
        attention_block_size: query rows per block of the blocked attention (None: max(window, 256)).
        mini_batch_size: b, tokens per inner step. The inner loss of a mini-batch is the mean next-token loss of
            its b positions, the last one's target being the first token of the next mini-batch (see
            ``models/e2e/modeling.py``), so b = 1 is online gradient descent.
        updated_fraction: fraction of the blocks, counted from the top, that carry an updated ("prime") MLP;
            ``num_updated_layers = ceil(fraction × num_hidden_layers)``, at least 1 (paper: 1/4).
        updated_intermediate_size: width of the static MLP in the updated blocks (None: ``intermediate_size``). The
            registry shrinks it so that the model has the parameter count of TTT-Linear at the same size (the
            public release keeps the count the same way).
        prime_intermediate_size: width of the prime MLPs (None: ``intermediate_size``).
        inner_lr: inner SGD step size (initial value if learnable); 0 disables test-time training.
        inner_lr_learnable: learn one log step size per prime weight tensor (gate, up, down of every updated
            block) in the outer loop; needs ``inner_lr > 0``.
        inner_grad_clip: clip the inner gradient of each sequence to this global norm (over all prime weights)
            before the step; None: no clipping.
        meta_gradient: "exact" (training back-propagates through the inner gradients: gradient of gradient) or
            "first_order" (the inner gradients are treated as constants in the outer backward; cheaper, biased).
        rope_theta, rms_norm_eps, initializer_range, tie_word_embeddings, max_position_embeddings, use_cache,
            pad_token_id, bos_token_id, eos_token_id: as in ``TTTConfig``.
    """

    model_type = "tttlm_e2e"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 768,
        intermediate_size: int = 2048,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        sliding_window: int = 2048,
        attention_block_size: int | None = None,
        mini_batch_size: int = 256,
        updated_fraction: float = 0.25,
        updated_intermediate_size: int | None = None,
        prime_intermediate_size: int | None = None,
        inner_lr: float = 0.1,
        inner_lr_learnable: bool = True,
        inner_grad_clip: float | None = 1.0,
        meta_gradient: str = "exact",
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        max_position_embeddings: int = 2048,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        **kwargs: Any,
    ) -> None:
        for name, value in (("sliding_window", sliding_window), ("mini_batch_size", mini_batch_size)):
            positive_int("E2EConfig", name, value)
        for name, value in (
            ("attention_block_size", attention_block_size),
            ("updated_intermediate_size", updated_intermediate_size),
            ("prime_intermediate_size", prime_intermediate_size),
        ):
            if value is not None:
                positive_int("E2EConfig", name, value)
        if not is_number(updated_fraction) or not 0 < updated_fraction <= 1:
            raise ValueError(
                f"E2EConfig: updated_fraction must be a number in (0, 1] (the fraction of blocks, from the top, "
                f"whose prime MLP is updated at test time); got {updated_fraction!r}. The paper uses 0.25."
            )
        if not is_number(inner_lr) or inner_lr < 0:
            raise ValueError(f"E2EConfig: inner_lr must be a finite number >= 0; got {inner_lr!r}. Pass e.g. 0.1.")
        check_flags("E2EConfig", inner_lr_learnable=inner_lr_learnable)
        if inner_lr_learnable and inner_lr == 0:
            raise ValueError(
                "E2EConfig: a learnable inner lr is stored as its logarithm, so inner_lr must be > 0 when "
                "inner_lr_learnable=True; for a model without test-time training pass inner_lr_learnable=False"
            )
        if inner_grad_clip is not None:
            positive_number("E2EConfig", "inner_grad_clip", inner_grad_clip)
        if meta_gradient not in META_GRADIENTS:
            raise ValueError(
                f"E2EConfig: meta_gradient must be one of {', '.join(map(repr, META_GRADIENTS))}; "
                f"got {meta_gradient!r}."
            )

        self.sliding_window = sliding_window
        self.attention_block_size = attention_block_size
        self.mini_batch_size = mini_batch_size
        self.updated_fraction = float(updated_fraction)
        # stored resolved, so a saved config.json states what the model has
        self.updated_intermediate_size = updated_intermediate_size or intermediate_size
        self.prime_intermediate_size = prime_intermediate_size or intermediate_size
        self.inner_lr = float(inner_lr)
        self.inner_lr_learnable = inner_lr_learnable
        self.inner_grad_clip = None if inner_grad_clip is None else float(inner_grad_clip)
        self.meta_gradient = meta_gradient
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

    @property
    def num_updated_layers(self) -> int:
        """How many blocks, from the top, carry an updated prime MLP: ceil(fraction × layers), at least 1."""
        # the small tolerance keeps e.g. 0.25 × 12 at 3 whatever the float rounding
        return max(1, min(self.num_hidden_layers, math.ceil(self.updated_fraction * self.num_hidden_layers - 1e-9)))

    @property
    def first_updated_layer(self) -> int:
        """Index of the lowest updated block; the inner gradient never goes below its input."""
        return self.num_hidden_layers - self.num_updated_layers
