"""``TTTCache``: the recurrent state of a TTT model.

Unlike an attention KV cache it has a fixed size: per block, the TTT layer's inner state (W at the start of the
open mini-batch, the pending gradient sums, the position inside the mini-batch), the shared-q/k conv states
(mamba backbone) and the pre-conv state. Decoding one more token therefore costs the same at any context length.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from tttlm.layers.ttt import TTTLayerCache
from tttlm.models.cache import BlockCache


class TTTBlockCache(NamedTuple):
    """What one block carries: its TTT layer's cache and, with ``pre_conv``, the pre-conv state."""

    ttt: TTTLayerCache
    # (batch, conv_kernel - 1, hidden): the last normalised inputs of the pre-conv sub-block
    pre_conv: Tensor | None = None


class TTTCache(BlockCache):
    """Recurrent state of a ``TTTModel``: one ``TTTBlockCache`` per block (fixed size, so decoding one more token
    costs the same at any context length)."""
