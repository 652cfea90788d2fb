"""``StackCache``: what a ``StackModel`` carries between forward calls, one tuple of mixer caches per block.

Per mixer: a ``KVCache`` (attention: all keys for full attention, the last window − 1 for sliding-window
attention), a ``GatedDeltaNetCache`` (state and conv states), a ``Mamba2LayerCache`` (conv inputs and SSM state),
a ``TTTLayerCache`` or a ``LaCTLayerCache`` (KV window and fast weights). Sliding-window, Gated DeltaNet, Mamba-2,
TTT and LaCT caches have a fixed size; full attention's grows with the sequence.
"""

from __future__ import annotations

from tttlm.models.cache import BlockCache


class StackCache(BlockCache):
    """Recurrent state and KV windows of a ``StackModel``, updated in place by every forward call that receives it.

    Attributes:
        blocks: per block, a tuple with one cache per mixer (in ``config.layer_mixers`` order), or None before
            the first forward call.
        seen_tokens: number of tokens consumed so far.

    Follows the parts of the transformers ``Cache`` interface that ``generate`` uses, like ``TTTCache``; the
    recurrent mixers cannot be rolled back, so ``crop`` only accepts 0.
    """
