"""transformers' Mamba-2 mixer as a mixer of our stack models (``mamba2-swa``): same parameters, names and maths as
the library's ``Mamba2Mixer``, with the stack's call contract ``forward(x, cache) -> (y, cache)``.

The library's mixer reads and writes its conv and SSM states through a transformers ``Cache`` of many layers, and
its one-token path updates both tensors in place. ``LayerStates`` is that interface for one layer over copies of a
``Mamba2LayerCache`` (a named tuple, so the stack's ``BlockCache`` can select, reorder and detach it like every other
mixer's), so a call never changes the cache it was given (the stack's blocks are pure functions of their inputs,
which gradient checkpointing needs).

Precision: the library's chunked scan casts its inputs to float32 and keeps the SSM state in float32 whatever the
model's dtype (its one-token step computes in the input's precision and stores the state in float32), so a float64
model's cached decoding equals its full forward to float32 rounding only.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import Mamba2Config
from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

from tttlm.models.ssm.modeling import library_cache_argument


class Mamba2LayerCache(NamedTuple):
    """What a Mamba-2 mixer carries: the last ``conv_kernel`` conv inputs (batch, conv channels, conv_kernel) and
    the SSM state (batch, heads, head_dim, state_size), float32."""

    conv: Tensor
    ssm: Tensor


class LayerStates:
    """The part of the transformers ``Cache`` interface that ``Mamba2Mixer.forward`` uses, for one layer.

    Holds clones of a ``Mamba2LayerCache`` (or nothing, at the start of a sequence); the mixer reads them, updates
    them in place or replaces them, and ``result()`` returns what it left. The layer index the mixer passes is
    ignored: there is one layer here.
    """

    def __init__(self, cache: Mamba2LayerCache | None) -> None:
        self.conv = None if cache is None else cache.conv.clone()
        self.ssm = None if cache is None else cache.ssm.clone()

    def get_conv_state(self, layer_idx: int, state_idx: int = 0) -> Tensor | None:
        return self.conv

    def get_recurrent_state(self, layer_idx: int, state_idx: int = 0) -> Tensor | None:
        return self.ssm

    def is_recording_past(self, layer_idx: int) -> bool:
        return False

    def get_recurrent_states_to_keep(self, layer_idx: int | None = None) -> int:
        # transformers 5.25+: intermediate states kept for rolling back speculative tokens; none here
        return 0

    def increase_count(self, layer_idx: int, state_idx: int = 0) -> None:
        # transformers 5.25+ counts tokens when a decode step updates the conv state in place (self.conv, a clone);
        # the stack's cache counts positions itself
        return None

    def update_conv_state(self, conv_states: Tensor, layer_idx: int, *, conv_kernel_size: int, **_: Any) -> Tensor:
        """conv_states (batch, channels, T): this call's conv inputs. Returns the cached inputs followed by these
        (zeros before the first call, so the stream is at least ``conv_kernel_size`` long) and keeps the last
        ``conv_kernel_size`` of them, as the library's ``LinearAttentionLayer.update_conv_state`` does."""
        if self.conv is None:
            stream = nn.functional.pad(conv_states, (max(0, conv_kernel_size - conv_states.shape[-1]), 0))
        else:
            stream = torch.cat([self.conv, conv_states], dim=-1)
        self.conv = stream[..., stream.shape[-1] - conv_kernel_size :].clone()
        return stream

    def update_recurrent_state(self, recurrent_states: Tensor, layer_idx: int, **_: Any) -> Tensor:
        self.ssm = recurrent_states
        return recurrent_states

    def result(self) -> Mamba2LayerCache:
        assert self.conv is not None, "the mixer left no conv state"
        assert self.ssm is not None, "the mixer left no SSM state"
        return Mamba2LayerCache(self.conv, self.ssm)


class Mamba2StackMixer(Mamba2Mixer):
    """The library's ``Mamba2Mixer`` (in_proj → causal conv → SSD scan → gated RMSNorm → out_proj) built from the
    stack's dims. Input and output (batch, seq, hidden_size).

    Args:
        hidden_size: model width.
        head_dim: SSM head dim; heads = ``expand × hidden_size / head_dim``.
        state_size: SSM state size N.
        expand: inner width / hidden_size.
        n_groups: groups of B and C (shared by heads/n_groups heads each).
        conv_kernel: causal conv kernel.
        chunk_size: chunk length of the SSD scan.
        eps: epsilon of the gated RMSNorm.
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        head_dim: int,
        state_size: int,
        expand: int = 2,
        n_groups: int = 1,
        conv_kernel: int = 4,
        chunk_size: int = 256,
        eps: float = 1e-6,
    ) -> None:
        config = Mamba2Config(
            num_hidden_layers=1,
            hidden_size=hidden_size,
            num_heads=expand * hidden_size // head_dim,
            head_dim=head_dim,
            state_size=state_size,
            expand=expand,
            n_groups=n_groups,
            conv_kernel=conv_kernel,
            chunk_size=chunk_size,
            layer_norm_epsilon=eps,
        )
        super().__init__(config, layer_idx=0)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The library's init of a mixer (``Mamba2PreTrainedModel._init_weights``): A = 1 … heads, D = 1, dt bias
        with softplus(dt bias) log-uniform in [time_step_min, time_step_max]; conv and out_proj Kaiming-uniform
        (a = √5), zero conv bias; gated norm weight 1. in_proj is a plain linear layer (the model's normal init)."""
        if self.A_log.device.type == "meta":
            return
        self.init_mamba2_weights()
        nn.init.kaiming_uniform_(self.conv1d.weight, a=math.sqrt(5))
        nn.init.zeros_(self.conv1d.bias)
        nn.init.kaiming_uniform_(self.out_proj.weight, a=math.sqrt(5))
        nn.init.ones_(self.norm.weight)

    def forward(self, x: Tensor, cache: Mamba2LayerCache | None = None) -> tuple[Tensor, Mamba2LayerCache]:
        """x: (batch, seq, hidden) normalised block input; ``cache`` continues a stream. Returns (batch, seq,
        hidden) and the new cache (``cache`` itself is left as it is)."""
        states = LayerStates(cache)
        y = super().forward(x, **library_cache_argument(Mamba2Mixer.forward, states))
        return y, states.result()
