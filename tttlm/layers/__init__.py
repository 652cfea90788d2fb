"""Sequence-mixing layers built on the functional ops."""

from tttlm.layers.conv import CausalConv, causal_depthwise_conv
from tttlm.layers.ttt import TTTMLP, TTTLayer, TTTLayerCache, TTTLinear

__all__ = ["TTTMLP", "CausalConv", "TTTLayer", "TTTLayerCache", "TTTLinear", "causal_depthwise_conv"]
