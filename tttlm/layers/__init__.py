"""Sequence-mixing layers built on the functional ops."""

from tttlm.layers.attention import Attention, KVCache, causal_attention
from tttlm.layers.conv import CausalConv, causal_depthwise_conv
from tttlm.layers.gated_deltanet import GatedDeltaNet, GatedDeltaNetCache, gated_delta_rule
from tttlm.layers.selective_scan import selective_scan
from tttlm.layers.ttt import TTTMLP, TTTLayer, TTTLayerCache, TTTLinear

__all__ = [
    "TTTMLP",
    "Attention",
    "CausalConv",
    "GatedDeltaNet",
    "GatedDeltaNetCache",
    "KVCache",
    "TTTLayer",
    "TTTLayerCache",
    "TTTLinear",
    "causal_attention",
    "causal_depthwise_conv",
    "gated_delta_rule",
    "selective_scan",
]
