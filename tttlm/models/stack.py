"""``StackModel`` / ``StackForCausalLM``: blocks of chosen sequence mixers, as transformers ``PreTrainedModel``s.

Block i, each sub-block pre-normed with RMSNorm (see ``StackConfig``):

    for m in layer_mixers[i]:  x ← x + m(RMSNorm(x))      sliding/full attention, Gated DeltaNet, TTT
    x ← x + SwiGLU(RMSNorm(x))

The model shares the TTT model's conventions: a ``StackCache`` updated in place, padding refused (recurrent
mixers would absorb pad tokens), the loss shifted inside, ``generate`` creating its own cache.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel

from tttlm.layers.attention import Attention
from tttlm.layers.conv import CausalConv
from tttlm.layers.gated_deltanet import GatedDeltaNet
from tttlm.layers.mlp import SwiGLU
from tttlm.layers.ttt import TTTLayer
from tttlm.models.modeling import _TIED_LM_HEAD, BlockStackBackbone, CausalLMHead, init_module_weights
from tttlm.models.stack_cache import StackCache
from tttlm.models.stack_config import StackConfig

# attribute names of each mixer and its norm inside a block (they name the checkpoint keys)
_MIXER_ATTRS = {
    "full_attention": "attn",
    "sliding_attention": "attn",
    "gated_deltanet": "gdn",
    "ttt": "ttt",
}


def _make_mixer(name: str, config: StackConfig) -> nn.Module:
    if name in ("full_attention", "sliding_attention"):
        return Attention(
            config.hidden_size,
            config.num_attention_heads,
            window=config.sliding_window if name == "sliding_attention" else None,
            rope_theta=config.rope_theta,
            block_size=config.attention_block_size,
        )
    if name == "gated_deltanet":
        return GatedDeltaNet(
            config.hidden_size,
            config.gdn_num_heads,
            config.gdn_head_dim,
            expand_v=config.gdn_expand_v,
            conv_kernel=config.conv_kernel,
            chunk_size=config.gdn_chunk_size,
            form=config.gdn_form,
            eps=config.rms_norm_eps,
        )
    return TTTLayer(
        config.hidden_size,
        config.ttt_num_heads,
        config.ttt_layer_type,
        mini_batch_size=config.ttt_mini_batch_size,
        base_lr=config.ttt_base_lr,
        rope_theta=config.rope_theta,
        use_gate=config.ttt_use_gate,
        form=config.ttt_form,
        initializer_range=config.initializer_range,
    )


class StackBlock(nn.Module):
    """One block: ``x + m(RMSNorm(x))`` for each configured mixer m, then ``x + SwiGLU(RMSNorm(x))``.

    ``forward(x, cache) -> (x, cache)``; x: (batch, seq, hidden); the cache is a tuple with one entry per mixer.
    A pure function of its inputs (nothing is modified in place), so gradient checkpointing may recompute it.
    """

    def __init__(self, config: StackConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.mixer_attrs = [_MIXER_ATTRS[name] for name in config.layer_mixers[layer_idx]]
        for name, attr in zip(config.layer_mixers[layer_idx], self.mixer_attrs, strict=True):
            setattr(self, f"{attr}_norm", nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps))
            setattr(self, attr, _make_mixer(name, config))
        self.ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: Tensor, cache: tuple | None = None) -> tuple[Tensor, tuple]:
        """x: (batch, seq, hidden); ``cache`` continues a stream. Returns (batch, seq, hidden) and the new cache."""
        new_cache = []
        for i, attr in enumerate(self.mixer_attrs):
            h, mixer_cache = getattr(self, attr)(getattr(self, f"{attr}_norm")(x), None if cache is None else cache[i])
            x = x + h
            new_cache.append(mixer_cache)
        x = x + self.mlp(self.ffn_norm(x))
        return x, tuple(new_cache)


class StackPreTrainedModel(PreTrainedModel):
    """Weight init, checkpointing support and the config class shared by the stack models."""

    config_class = StackConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["StackBlock"]
    # generate: no assisted decoding (recurrent states and KV windows cannot be rolled back)
    _is_stateful = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module's own parameters, every one through ``nn.init`` (see ``TTTPreTrainedModel``)."""
        init_module_weights(module, self.config.initializer_range, (CausalConv, TTTLayer, GatedDeltaNet))

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not hand us a transformers DynamicCache: forward creates its own StackCache
        return False


class StackModel(BlockStackBackbone, StackPreTrainedModel):
    """Embedding, ``num_hidden_layers`` × ``StackBlock`` and the final RMSNorm. Returns hidden states."""

    cache_class = StackCache

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([StackBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()


class StackForCausalLM(CausalLMHead, StackPreTrainedModel, GenerationMixin):
    """``StackModel`` with the LM head (tied to the embedding unless ``config.tie_word_embeddings`` is False)."""

    _tied_weights_keys = _TIED_LM_HEAD

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.model = StackModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
