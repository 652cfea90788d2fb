"""``StackModel`` / ``StackForCausalLM``: blocks of chosen sequence mixers, as transformers ``PreTrainedModel``s.

Block i, each sub-block pre-normed with RMSNorm (see ``StackConfig``):

    for m in layer_mixers[i]:  x ← x + m(RMSNorm(x))      short conv, sliding/full attention, Gated DeltaNet, Mamba-2,
                                                         TTT, LaCT
    x ← x + SwiGLU(RMSNorm(x))

The model shares the TTT model's conventions: a ``StackCache`` updated in place, padding refused (recurrent
mixers would absorb pad tokens), the loss shifted inside, ``generate`` creating its own cache.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn
from transformers import GenerationMixin

from tttlm.layers.attention import Attention
from tttlm.layers.conv import CausalConv
from tttlm.layers.gated_deltanet import GatedDeltaNet
from tttlm.layers.lact import LaCTLayer
from tttlm.layers.mlp import SwiGLU
from tttlm.layers.ttt import TTTLayer
from tttlm.models.base import TIED_LM_HEAD, BlockStackBackbone, CausalLMHead, StatefulPreTrainedModel
from tttlm.models.inner_lr_scale import InnerLrScaled
from tttlm.models.ssm.stack_mixer import Mamba2StackMixer
from tttlm.models.stack.cache import StackCache
from tttlm.models.stack.configuration import StackConfig

# attribute names of each mixer and its norm inside a block (they name the checkpoint keys)
_MIXER_ATTRS = {
    "short_conv": "conv",
    "full_attention": "attn",
    "sliding_attention": "attn",
    "gated_deltanet": "gdn",
    "mamba2": "mamba",
    "ttt": "ttt",
    "lact": "lact",
}


def _make_mixer(name: str, config: StackConfig) -> nn.Module:
    if name == "short_conv":
        return CausalConv(config.hidden_size, config.conv_kernel)
    if name in ("full_attention", "sliding_attention"):
        return Attention(
            config.hidden_size,
            config.num_attention_heads,
            window=config.sliding_window if name == "sliding_attention" else None,
            rope_theta=config.rope_theta,
            block_size=config.attention_block_size,
            qk_norm=config.qk_norm,
            rope_pairing=config.rope_pairing,
            eps=config.rms_norm_eps,
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
    if name == "mamba2":
        return Mamba2StackMixer(
            config.hidden_size,
            head_dim=config.mamba2_head_dim,
            state_size=config.mamba2_state_size,
            expand=config.mamba2_expand,
            n_groups=config.mamba2_n_groups,
            conv_kernel=config.conv_kernel,
            chunk_size=config.mamba2_chunk_size,
            eps=config.rms_norm_eps,
        )
    if name == "lact":
        return LaCTLayer(
            config.hidden_size,
            config.num_attention_heads,
            config.lact_num_heads,
            window=config.sliding_window,
            chunk_size=config.lact_chunk_size,
            inter_multi=config.lact_inter_multi,
            rope_theta=config.rope_theta,
            qk_norm=config.lact_qk_norm,
            low_rank=config.lact_low_rank,
            fw_init_gain=config.lact_fw_init_gain,
            base_lr=config.lact_base_lr,
            use_momentum=config.lact_use_momentum,
            use_muon=config.lact_use_muon,
            learnable_ttt_scale=config.lact_learnable_ttt_scale,
            form=config.lact_form,
            block_size=config.attention_block_size,
            initializer_range=config.initializer_range,
        )
    return config.ttt_layer_spec().build(config.hidden_size)


class StackBlock(nn.Module):
    """One block: ``x + m(RMSNorm(x))`` for each configured mixer m, then ``x + SwiGLU(RMSNorm(x))``; with
    ``config.post_norm`` each sub-block's output but a short conv's is RMSNorm'd before the residual add
    (``x + RMSNorm(m(RMSNorm(x)))``, the TTT-E2E release's block).

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
            # the release has no conv sub-block: a short conv's output is left as it is; off: identities (no
            # parameters)
            post = config.post_norm and name != "short_conv"
            setattr(
                self,
                f"{attr}_post_norm",
                nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps) if post else nn.Identity(),
            )
        self.ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.ffn_post_norm = (
            nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps) if config.post_norm else nn.Identity()
        )

    def _residual(self, x: Tensor, h: Tensor, attr: str) -> Tensor:
        return x + getattr(self, f"{attr}_post_norm")(h)

    def forward(self, x: Tensor, cache: tuple | None = None) -> tuple[Tensor, tuple]:
        """x: (batch, seq, hidden); ``cache`` continues a stream. Returns (batch, seq, hidden) and the new cache."""
        new_cache = []
        for i, attr in enumerate(self.mixer_attrs):
            h, mixer_cache = getattr(self, attr)(getattr(self, f"{attr}_norm")(x), None if cache is None else cache[i])
            x = self._residual(x, h, attr)
            new_cache.append(mixer_cache)
        x = self._residual(x, self.mlp(self.ffn_norm(x)), "ffn")
        return x, tuple(new_cache)


class StackPreTrainedModel(InnerLrScaled, StatefulPreTrainedModel):
    """Weight init, checkpointing support, the inner-lr scale (of TTT mixers) and the config class shared by the
    stack models."""

    config_class = StackConfig
    _no_split_modules: ClassVar[list[str]] = ["StackBlock"]
    self_initialising = (CausalConv, TTTLayer, GatedDeltaNet, Mamba2StackMixer, LaCTLayer)


class StackModel(BlockStackBackbone, StackPreTrainedModel):
    """Embedding, ``num_hidden_layers`` × ``StackBlock`` and the final RMSNorm. Returns hidden states."""

    block_class = StackBlock
    cache_class = StackCache


class StackForCausalLM(CausalLMHead, StackPreTrainedModel, GenerationMixin):
    """``StackModel`` with the LM head (tied to the embedding unless ``config.tie_word_embeddings`` is False)."""

    backbone_class = StackModel
    _tied_weights_keys = TIED_LM_HEAD
