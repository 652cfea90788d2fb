"""Sequence-mixing layers built on the functional ops (``gated_delta_rule`` and ``selective_scan`` are ops, kept
importable from here for the layers that use them)."""

from tttlm.layers.attention import Attention, KVCache, causal_attention
from tttlm.layers.conv import CausalConv, causal_depthwise_conv
from tttlm.layers.gated_deltanet import GatedDeltaNet, GatedDeltaNetCache
from tttlm.layers.ttt import TTTMLP, TTTLayer, TTTLayerCache, TTTLayerSpec, TTTLinear
from tttlm.ops.gated_delta_rule import gated_delta_rule
from tttlm.ops.selective_scan import selective_scan

__all__ = [
    "TTTMLP",
    "Attention",
    "CausalConv",
    "GatedDeltaNet",
    "GatedDeltaNetCache",
    "KVCache",
    "TTTLayer",
    "TTTLayerCache",
    "TTTLayerSpec",
    "TTTLinear",
    "causal_attention",
    "causal_depthwise_conv",
    "gated_delta_rule",
    "selective_scan",
]
