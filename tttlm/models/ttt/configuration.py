"""``TTTConfig``: the transformers configuration of TTT language models, and the paper's size presets."""

from __future__ import annotations

from typing import Any

from tttlm.layers.ttt import TTTLayerSpec
from tttlm.models.base import LMConfig, check_flags, choice, positive_int, positive_number, sequence_form
from tttlm.ops.forms import INNER_MODELS

BACKBONES = ("transformer", "mamba")

# Sizes only; everything else (layer_type, backbone, ...) keeps the config defaults unless overridden.
# The paper presets (hidden / MLP / layers / heads) use vocab 32000, mini-batch 16 and head dim 64 (96 for 760M,
# whose 1536 / 16 heads are the paper's).
PRESETS: dict[str, dict[str, Any]] = {
    # CI-sized: a few thousand parameters per block, runs in milliseconds on a CPU
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 172,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "mini_batch_size": 16,
    },
    "125m": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12},
    "350m": {"hidden_size": 1024, "intermediate_size": 2736, "num_hidden_layers": 24, "num_attention_heads": 16},
    "760m": {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
    "1.3b": {"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 24, "num_attention_heads": 32},
    # paper 2's two other sizes: the TTT-E2E release's Transformer dims (configs/model/1b.yaml, 3b.yaml)
    "1b": {"hidden_size": 2048, "intermediate_size": 5376, "num_hidden_layers": 24, "num_attention_heads": 32},
    "3b": {"hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 32, "num_attention_heads": 32},
}


class TTTConfig(LMConfig):
    """Configuration of a TTT language model (``TTTModel`` / ``TTTForCausalLM``).

    Defaults give the paper's 125M model with a Transformer backbone and TTT-Linear; ``TTTConfig.from_preset``
    gives the other sizes. Every value is validated here, so a bad config fails before a model is built.

    Args:
        vocab_size: number of token ids; ``input_ids`` must lie in ``[0, vocab_size)``.
        hidden_size: model width (the residual stream).
        intermediate_size: inner width of the SwiGLU feed-forward network.
        num_hidden_layers: number of blocks.
        num_attention_heads: number of TTT heads; head dim = hidden_size / heads, which must be even (RoPE).
        layer_type: "linear" (TTT-Linear) or "mlp" (TTT-MLP, inner MLP of width 4 × head dim).
        backbone: "transformer" (separate q/k projections) or "mamba" (one shared q/k projection followed by two
            causal depthwise convs, and optionally a conv sub-block before the TTT sub-block, see ``pre_conv``).
        mini_batch_size: TTT mini-batch size b (gradients inside a mini-batch are taken at its start state).
        ttt_base_lr: η_base of the inner learning rate; None means the paper's value (1.0 linear, 0.1 mlp).
        rope_theta: RoPE base (positions are taken modulo ``mini_batch_size``).
        use_gate: multiply the TTT output by ``gelu_tanh(x θG)``. None means the reference code's choice per
            backbone: False for the transformer backbone (ttt-lm-pytorch ``use_gate=False``; ttt-lm-jax's
            ``*_base`` layers have no gate), True for the mamba backbone; the resolved bool is stored.
        pre_conv: add the sub-block ``x + CausalConv(RMSNorm(x))`` before the TTT sub-block. None means True for
            the mamba backbone and False for the transformer backbone; the resolved bool is stored.
        conv_kernel: kernel size of all causal convs (shared-q/k convs and the pre-conv).
        ttt_form: op form for training and prefill, "dual" (matmul-only, default), "primal" (the slow reference;
            "naive" is read as it), "triton" (fused GPU kernels; an error without a GPU) or "auto" (triton on CUDA when
            possible, else dual); single-token decoding uses the O(1) step path (the fused step kernel for triton).
        ttt_inner_norm, ttt_learn_init, ttt_learn_lr: the first paper's ablation switches (all True is TTT as
            published): LayerNorm + residual in the inner model, learnable initial inner weights W0, learnable
            token-dependent inner lr. See ``tttlm.layers.TTTLayer`` (``inner_norm``, ``learn_init``, ``learn_lr``)
            and ``configs/ablations/``.
        rms_norm_eps: epsilon of the block RMSNorms.
        initializer_range: std of the normal init of linear layers, embeddings and the TTT inner weights.
        tie_word_embeddings: share the LM head with the input embedding.
        max_position_embeddings: informational only; TTT has no position limit (RoPE restarts every mini-batch).
        use_cache: whether forward returns a ``TTTCache`` by default (not while training).
        pad_token_id, bos_token_id, eos_token_id: special token ids (used by ``generate``).
        **kwargs: passed on to ``transformers.PretrainedConfig``.
    """

    model_type = "tttlm"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 768,
        intermediate_size: int = 2048,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        layer_type: str = "linear",
        backbone: str = "transformer",
        mini_batch_size: int = 16,
        ttt_base_lr: float | None = None,
        rope_theta: float = 10000.0,
        use_gate: bool | None = None,
        pre_conv: bool | None = None,
        conv_kernel: int = 4,
        ttt_form: str = "dual",
        ttt_inner_norm: bool = True,
        ttt_learn_init: bool = True,
        ttt_learn_lr: bool = True,
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
        for name, value in (("mini_batch_size", mini_batch_size), ("conv_kernel", conv_kernel)):
            positive_int("TTTConfig", name, value, example=16)
        choice("TTTConfig", "layer_type", layer_type, INNER_MODELS)
        choice("TTTConfig", "backbone", backbone, BACKBONES)
        ttt_form = sequence_form("TTTConfig", ttt_form)
        if ttt_base_lr is not None:
            positive_number("TTTConfig", "ttt_base_lr", ttt_base_lr, "1.0 (or None for the paper's value)")
        if pre_conv is not None and not isinstance(pre_conv, bool):
            raise ValueError(f"TTTConfig: pre_conv must be True, False or None (backbone default); got {pre_conv!r}.")
        use_gate = backbone == "mamba" if use_gate is None else use_gate
        check_flags(
            "TTTConfig",
            use_gate=use_gate,
            ttt_inner_norm=ttt_inner_norm,
            ttt_learn_init=ttt_learn_init,
            ttt_learn_lr=ttt_learn_lr,
        )

        self.layer_type = layer_type
        self.backbone = backbone
        self.mini_batch_size = mini_batch_size
        self.ttt_base_lr = None if ttt_base_lr is None else float(ttt_base_lr)
        self.use_gate = use_gate
        # stored resolved, so a saved config.json states what the model has
        self.pre_conv = backbone == "mamba" if pre_conv is None else pre_conv
        self.conv_kernel = conv_kernel
        self.ttt_form = ttt_form
        self.ttt_inner_norm, self.ttt_learn_init, self.ttt_learn_lr = ttt_inner_norm, ttt_learn_init, ttt_learn_lr
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

    def ttt_layer_spec(self) -> TTTLayerSpec:
        """The knobs of every block's TTT layer."""
        return TTTLayerSpec(
            num_heads=self.num_attention_heads,
            inner=self.layer_type,
            mini_batch_size=self.mini_batch_size,
            base_lr=self.ttt_base_lr,
            rope_theta=self.rope_theta,
            use_gate=self.use_gate,
            share_qk=self.backbone == "mamba",
            conv_kernel=self.conv_kernel,
            form=self.ttt_form,
            initializer_range=self.initializer_range,
            inner_norm=self.ttt_inner_norm,
            learn_init=self.ttt_learn_init,
            learn_lr=self.ttt_learn_lr,
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TTTConfig:
        """The config of a named size ("tiny", "125m", "350m", "760m", "1.3b"), with ``overrides`` applied.

        Example: ``TTTConfig.from_preset("125m", layer_type="mlp", backbone="mamba")``.
        """
        key = name.lower() if isinstance(name, str) else name
        if key not in PRESETS:
            raise ValueError(f"unknown TTT preset {name!r}; choose one of {', '.join(repr(p) for p in PRESETS)}")
        return cls(**{**PRESETS[key], **overrides})
