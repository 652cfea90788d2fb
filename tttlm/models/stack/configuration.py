"""``StackConfig``: a language model whose blocks each hold a chosen list of sequence mixers, then a SwiGLU MLP.

One configuration (and one model, ``stack/modeling.py``) covers the baselines that transformers has no CPU-friendly
class for: sliding-window attention, SWA/full hybrids, Gated DeltaNet, Mamba-2 + SWA hybrids, LaCT's SWA +
fast-weight layer (TTT-KVB) and SWA blocks with an added TTT layer (TTT-KVB of paper 1). ``layer_mixers[i]`` lists
the mixers of block i in order, e.g. ``[["sliding_attention", "ttt"], ...]``.
"""

from __future__ import annotations

from typing import Any

from tttlm.layers.rope import ROPE_PAIRINGS
from tttlm.layers.ttt import TTTLayerSpec
from tttlm.models.base import (
    LMConfig,
    check_flags,
    check_head_dim,
    choice,
    positive_int,
    positive_number,
    sequence_form,
)
from tttlm.ops.forms import INNER_MODELS
from tttlm.ops.gated_delta_rule import FORMS as GDN_FORMS
from tttlm.ops.lact import FORMS as LACT_FORMS

MIXERS = ("short_conv", "full_attention", "sliding_attention", "gated_deltanet", "mamba2", "ttt", "lact")


def _check_layer_mixers(layer_mixers: object, num_layers: int) -> list[list[str]]:
    example = '[["sliding_attention"], ["full_attention"]]'
    if not isinstance(layer_mixers, (list, tuple)) or len(layer_mixers) != num_layers:
        raise ValueError(
            f"StackConfig: layer_mixers must be a list of num_hidden_layers={num_layers} lists of mixer names "
            f"(e.g. {example}); got {layer_mixers!r}"
        )
    resolved = []
    for i, mixers in enumerate(layer_mixers):
        if not isinstance(mixers, (list, tuple)) or not mixers or len(set(mixers)) != len(mixers):
            raise ValueError(
                f"StackConfig: layer_mixers[{i}] must be a non-empty list of distinct mixer names; got {mixers!r}"
            )
        for name in mixers:
            choice("StackConfig", f"layer_mixers[{i}] entry", name, MIXERS)
        if {"full_attention", "sliding_attention"} <= set(mixers):
            raise ValueError(f"StackConfig: layer_mixers[{i}] has both full and sliding attention; keep one")
        resolved.append(list(mixers))
    return resolved


def _check_mamba2_dims(hidden_size: int, expand: int, head_dim: int, n_groups: int) -> None:
    inner = expand * hidden_size
    if inner % head_dim or (inner // head_dim) % n_groups:
        raise ValueError(
            f"StackConfig: the Mamba-2 inner width mamba2_expand × hidden_size = {inner} must split into heads of "
            f"mamba2_head_dim={head_dim}, and the heads into mamba2_n_groups={n_groups} equal groups; change one"
        )


class StackConfig(LMConfig):
    """Configuration of a ``StackForCausalLM``.

    Block i: for each mixer m in ``layer_mixers[i]``: ``x ← x + m(RMSNorm(x))``; then ``x ← x + SwiGLU(RMSNorm(x))``.
    Final RMSNorm, LM head (tied by default).

    Args:
        vocab_size, hidden_size, intermediate_size, num_hidden_layers: as in ``TTTConfig`` (MLP width
            ``intermediate_size``).
        num_attention_heads: attention heads (head dim = hidden_size / heads, even).
        layer_mixers: per block, the list of mixers among "short_conv" (a depthwise causal conv of kernel
            ``conv_kernel``, Zoology's short convolution), "full_attention", "sliding_attention", "gated_deltanet",
            "mamba2" (transformers' Mamba-2 mixer, ``ssm.stack_mixer``), "ttt", "lact" (``layers/lact.LaCTLayer``:
            SWA of window ``sliding_window`` and LaCT's fast weight in one mixer). None: full attention in every block.
        sliding_window: window w of "sliding_attention" (query i sees keys i − w < j ≤ i).
        attention_block_size: query rows per block of the blocked attention (None: max(window, 256)).
        qk_norm: per-head RMSNorm of the attention's queries and keys before RoPE (the TTT-E2E release's block).
        post_norm: an RMSNorm on every sub-block's output before the residual add (the release's block).
        rope_pairing: the attention's RoPE pairing, "half" (Llama's rotate-half) or "interleaved" (the release's).
        gdn_num_heads, gdn_head_dim: Gated DeltaNet heads and key head dim (None: head dim of the attention heads,
            and as many heads as make 0.75 × hidden_size, the flash-linear-attention default ratio).
        gdn_expand_v: value head dim / key head dim of Gated DeltaNet.
        gdn_chunk_size, gdn_form: chunk length and form ("chunk" or "recurrent") of the gated delta rule.
        mamba2_head_dim, mamba2_state_size, mamba2_expand, mamba2_n_groups, mamba2_chunk_size: the "mamba2"
            mixer's head dim, SSM state size, expand (inner width / hidden_size; heads = expand × hidden_size /
            head_dim), groups of B and C, and chunk length of its scan.
        conv_kernel: short causal conv kernel of Gated DeltaNet, Mamba-2 and the "short_conv" mixer.
        ttt_layer_type: inner model of the "ttt" mixer, "linear" (TTT-KVB of paper 1) or "mlp".
        ttt_num_heads: TTT heads (None: num_attention_heads).
        ttt_mini_batch_size: TTT mini-batch size (large for TTT-KVB, as in the TTT-E2E paper's comparison).
        ttt_base_lr, ttt_use_gate, ttt_form, ttt_inner_norm, ttt_learn_init, ttt_learn_lr: as ``ttt_base_lr``,
            ``use_gate`` and the ``ttt_*`` knobs of ``TTTConfig``.
        lact_num_heads, lact_chunk_size, lact_inter_multi, lact_low_rank, lact_fw_init_gain, lact_base_lr,
            lact_use_momentum, lact_use_muon, lact_learnable_ttt_scale, lact_qk_norm, lact_form: the "lact"
            mixer's ``num_lact_heads``, ``chunk_size``, ``inter_multi``, ``low_rank`` (None: full initial
            matrices), ``fw_init_gain``, ``base_lr``, ``use_momentum``, ``use_muon``, ``learnable_ttt_scale``,
            ``qk_norm`` and ``form`` (``LaCTLayer``; the defaults are the LaCT release's 760M LM config).
        rope_theta, rms_norm_eps, initializer_range, tie_word_embeddings, max_position_embeddings, use_cache,
            pad_token_id, bos_token_id, eos_token_id: as in ``TTTConfig``.
    """

    model_type = "tttlm_stack"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 768,
        intermediate_size: int = 2048,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        layer_mixers: list[list[str]] | None = None,
        sliding_window: int = 2048,
        attention_block_size: int | None = None,
        qk_norm: bool = False,
        post_norm: bool = False,
        rope_pairing: str = "half",
        gdn_num_heads: int | None = None,
        gdn_head_dim: int | None = None,
        gdn_expand_v: int = 2,
        gdn_chunk_size: int = 64,
        gdn_form: str = "chunk",
        mamba2_head_dim: int = 64,
        mamba2_state_size: int = 128,
        mamba2_expand: int = 2,
        mamba2_n_groups: int = 1,
        mamba2_chunk_size: int = 256,
        conv_kernel: int = 4,
        ttt_layer_type: str = "linear",
        ttt_num_heads: int | None = None,
        ttt_mini_batch_size: int = 256,
        ttt_base_lr: float | None = None,
        ttt_use_gate: bool = True,
        ttt_form: str = "dual",
        ttt_inner_norm: bool = True,
        ttt_learn_init: bool = True,
        ttt_learn_lr: bool = True,
        lact_num_heads: int = 4,
        lact_chunk_size: int = 2048,
        lact_inter_multi: int = 1,
        lact_low_rank: int | None = 32,
        lact_fw_init_gain: float = 0.5,
        lact_base_lr: float = 1e-3,
        lact_use_momentum: bool = True,
        lact_use_muon: bool = False,
        lact_learnable_ttt_scale: bool = True,
        lact_qk_norm: bool = False,
        lact_form: str = "chunk",
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
        for name, value in (
            ("sliding_window", sliding_window),
            ("gdn_expand_v", gdn_expand_v),
            ("gdn_chunk_size", gdn_chunk_size),
            ("mamba2_head_dim", mamba2_head_dim),
            ("mamba2_state_size", mamba2_state_size),
            ("mamba2_expand", mamba2_expand),
            ("mamba2_n_groups", mamba2_n_groups),
            ("mamba2_chunk_size", mamba2_chunk_size),
            ("conv_kernel", conv_kernel),
            ("ttt_mini_batch_size", ttt_mini_batch_size),
            ("lact_num_heads", lact_num_heads),
            ("lact_chunk_size", lact_chunk_size),
            ("lact_inter_multi", lact_inter_multi),
        ):
            positive_int("StackConfig", name, value)
        for name, value in (
            ("attention_block_size", attention_block_size),
            ("gdn_num_heads", gdn_num_heads),
            ("gdn_head_dim", gdn_head_dim),
            ("ttt_num_heads", ttt_num_heads),
            ("lact_low_rank", lact_low_rank),
        ):
            if value is not None:
                positive_int("StackConfig", name, value)
        choice("StackConfig", "gdn_form", gdn_form, GDN_FORMS)
        choice("StackConfig", "ttt_layer_type", ttt_layer_type, INNER_MODELS)
        ttt_form = sequence_form("StackConfig", ttt_form)
        if ttt_base_lr is not None:
            positive_number("StackConfig", "ttt_base_lr", ttt_base_lr)
        positive_number("StackConfig", "lact_base_lr", lact_base_lr, "1e-3")
        positive_number("StackConfig", "lact_fw_init_gain", lact_fw_init_gain, "0.5")
        choice("StackConfig", "lact_form", lact_form, LACT_FORMS)
        check_flags(
            "StackConfig",
            ttt_use_gate=ttt_use_gate,
            ttt_inner_norm=ttt_inner_norm,
            ttt_learn_init=ttt_learn_init,
            ttt_learn_lr=ttt_learn_lr,
            lact_use_momentum=lact_use_momentum,
            lact_use_muon=lact_use_muon,
            lact_learnable_ttt_scale=lact_learnable_ttt_scale,
            lact_qk_norm=lact_qk_norm,
            qk_norm=qk_norm,
            post_norm=post_norm,
        )
        choice("StackConfig", "rope_pairing", rope_pairing, tuple(ROPE_PAIRINGS))
        check_head_dim("StackConfig", hidden_size, num_attention_heads)
        ttt_num_heads = num_attention_heads if ttt_num_heads is None else ttt_num_heads
        check_head_dim("StackConfig", hidden_size, ttt_num_heads, "ttt_num_heads")
        if hidden_size % lact_num_heads:
            raise ValueError(
                f"StackConfig: hidden_size ({hidden_size}) must be a multiple of lact_num_heads ({lact_num_heads})"
            )
        head_dim = hidden_size // num_attention_heads
        gdn_head_dim = head_dim if gdn_head_dim is None else gdn_head_dim
        if gdn_num_heads is None:
            gdn_num_heads = max(1, round(0.75 * hidden_size / gdn_head_dim))
        if layer_mixers is None:
            layer_mixers = [["full_attention"]] * num_hidden_layers

        # stored resolved (defaults filled in), so a saved config.json states what the model has
        self.layer_mixers = _check_layer_mixers(layer_mixers, num_hidden_layers)
        if any("mamba2" in mixers for mixers in self.layer_mixers):  # other stacks never read the Mamba-2 dims
            _check_mamba2_dims(hidden_size, mamba2_expand, mamba2_head_dim, mamba2_n_groups)
        self.sliding_window = sliding_window
        self.attention_block_size = attention_block_size
        self.qk_norm, self.post_norm, self.rope_pairing = qk_norm, post_norm, rope_pairing
        self.gdn_num_heads = gdn_num_heads
        self.gdn_head_dim = gdn_head_dim
        self.gdn_expand_v = gdn_expand_v
        self.gdn_chunk_size = gdn_chunk_size
        self.gdn_form = gdn_form
        self.mamba2_head_dim, self.mamba2_state_size = mamba2_head_dim, mamba2_state_size
        self.mamba2_expand, self.mamba2_n_groups = mamba2_expand, mamba2_n_groups
        self.mamba2_chunk_size = mamba2_chunk_size
        self.conv_kernel = conv_kernel
        self.ttt_layer_type = ttt_layer_type
        self.ttt_num_heads = ttt_num_heads
        self.ttt_mini_batch_size = ttt_mini_batch_size
        self.ttt_base_lr = None if ttt_base_lr is None else float(ttt_base_lr)
        self.ttt_use_gate = ttt_use_gate
        self.ttt_form = ttt_form
        self.ttt_inner_norm, self.ttt_learn_init, self.ttt_learn_lr = ttt_inner_norm, ttt_learn_init, ttt_learn_lr
        self.lact_num_heads = lact_num_heads
        self.lact_chunk_size = lact_chunk_size
        self.lact_inter_multi = lact_inter_multi
        self.lact_low_rank = lact_low_rank
        self.lact_fw_init_gain = lact_fw_init_gain
        self.lact_base_lr = lact_base_lr
        self.lact_use_momentum = lact_use_momentum
        self.lact_use_muon = lact_use_muon
        self.lact_learnable_ttt_scale = lact_learnable_ttt_scale
        self.lact_qk_norm = lact_qk_norm
        self.lact_form = lact_form
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
        """The knobs of the "ttt" mixer (no shared q/k: that is the Mamba backbone's, which the stack has not)."""
        return TTTLayerSpec(
            num_heads=self.ttt_num_heads,
            inner=self.ttt_layer_type,
            mini_batch_size=self.ttt_mini_batch_size,
            base_lr=self.ttt_base_lr,
            rope_theta=self.rope_theta,
            use_gate=self.ttt_use_gate,
            form=self.ttt_form,
            initializer_range=self.initializer_range,
            inner_norm=self.ttt_inner_norm,
            learn_init=self.ttt_learn_init,
            learn_lr=self.ttt_learn_lr,
        )
