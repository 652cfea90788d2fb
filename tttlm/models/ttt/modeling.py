"""TTT language models as transformers ``PreTrainedModel``s: ``TTTModel`` (the backbone) and ``TTTForCausalLM``.

Block (``TTTBlock``), with RMSNorm before every sub-block:

    x ← x + CausalConv(RMSNorm(x))       only with ``config.pre_conv`` (mamba backbone by default)
    x ← x + TTT(RMSNorm(x))              TTT-Linear or TTT-MLP; mamba backbone: shared q/k projection + two convs
    x ← x + SwiGLU(RMSNorm(x))

then a final RMSNorm and the LM head (tied to the embedding by default). The model carries its recurrent state in
a ``TTTCache``; a forward call of one token per sequence takes the O(1) decode step of the TTT layer.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn
from transformers import GenerationMixin

from tttlm.layers.conv import CausalConv
from tttlm.layers.mlp import SwiGLU
from tttlm.layers.ttt import TTTLayer
from tttlm.models.base import TIED_LM_HEAD, BlockStackBackbone, CausalLMHead, StatefulPreTrainedModel
from tttlm.models.inner_lr_scale import InnerLrScaled
from tttlm.models.ttt.cache import TTTBlockCache, TTTCache
from tttlm.models.ttt.configuration import TTTConfig


class TTTBlock(nn.Module):
    """One block: [pre-conv sub-block,] TTT sub-block, SwiGLU sub-block, each ``x + f(RMSNorm(x))``.

    ``forward(x, cache) -> (x, cache)``; x: (batch, seq, hidden). The block is a pure function of its inputs (the
    returned cache is new, nothing is modified in place), so gradient checkpointing may recompute it.
    """

    def __init__(self, config: TTTConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.pre_conv = config.pre_conv
        if self.pre_conv:
            self.conv_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.conv = CausalConv(config.hidden_size, config.conv_kernel)
        self.seq_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.ttt = config.ttt_layer_spec().build(config.hidden_size)
        self.ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: Tensor, cache: TTTBlockCache | None = None) -> tuple[Tensor, TTTBlockCache]:
        """x: (batch, seq, hidden); ``cache`` continues a stream. Returns (batch, seq, hidden) and the new cache."""
        pre_conv_state = None
        if self.pre_conv:
            h, pre_conv_state = self.conv(self.conv_norm(x), None if cache is None else cache.pre_conv)
            x = x + h
        h, ttt_cache = self.ttt(self.seq_norm(x), None if cache is None else cache.ttt)
        x = x + h
        x = x + self.mlp(self.ffn_norm(x))
        return x, TTTBlockCache(ttt_cache, pre_conv_state)


class TTTPreTrainedModel(InnerLrScaled, StatefulPreTrainedModel):
    """Weight init, checkpointing support, the inner-lr scale and the config class shared by the TTT models."""

    config_class = TTTConfig
    _no_split_modules: ClassVar[list[str]] = ["TTTBlock"]
    self_initialising = (CausalConv, TTTLayer)


class TTTModel(BlockStackBackbone, TTTPreTrainedModel):
    """Embedding, ``num_hidden_layers`` × ``TTTBlock`` and the final RMSNorm. Returns hidden states."""

    block_class = TTTBlock
    cache_class = TTTCache


class TTTForCausalLM(CausalLMHead, TTTPreTrainedModel, GenerationMixin):
    """``TTTModel`` with the LM head (tied to the embedding unless ``config.tie_word_embeddings`` is False)."""

    backbone_class = TTTModel
    _tied_weights_keys = TIED_LM_HEAD
