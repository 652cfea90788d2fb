"""``TTTCache``: the recurrent state a TTT language model carries between forward calls.

Unlike an attention KV cache it has a fixed size: per block, the TTT layer's inner state (W at the start of the
open mini-batch, the pending gradient sums, the position inside the mini-batch), the shared-q/k conv states
(mamba backbone) and the pre-conv state. Decoding one more token therefore costs the same at any context length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from tttlm.layers.ttt import TTTLayerCache
from tttlm.ops.state import TTTState


class TTTBlockCache(NamedTuple):
    """What one block carries: its TTT layer's cache and, with ``pre_conv``, the pre-conv state."""

    ttt: TTTLayerCache
    # (batch, conv_kernel - 1, hidden): the last normalised inputs of the pre-conv sub-block
    pre_conv: Tensor | None = None


def _map_block(cache: TTTBlockCache, fn: Callable[[Tensor], Tensor]) -> TTTBlockCache:
    """Apply ``fn`` to every tensor of a block cache (all have the batch as dim 0)."""
    state = cache.ttt.state
    new_state = TTTState(tuple(fn(w) for w in state.weights), tuple(fn(g) for g in state.grad_sums), state.position)
    conv_q, conv_k = (None if t is None else fn(t) for t in (cache.ttt.conv_q, cache.ttt.conv_k))
    pre_conv = None if cache.pre_conv is None else fn(cache.pre_conv)
    return TTTBlockCache(TTTLayerCache(new_state, conv_q, conv_k), pre_conv)


class TTTCache:
    """Recurrent state of a ``TTTModel``, updated in place by every forward call that receives it.

    ``model(ids, past_key_values=cache, use_cache=True)`` continues the sequence from where the cache stands and
    returns the same object, updated. An empty cache (``TTTCache(config.num_hidden_layers)``) starts a sequence;
    a forward call with ``use_cache=True`` and no cache creates one.

    Attributes:
        blocks: one ``TTTBlockCache`` per block, or None before the first forward call.
        seen_tokens: number of tokens consumed so far (the HF "sequence length" of the cache).

    It follows the parts of the transformers ``Cache`` interface that ``generate`` uses (``get_seq_length``,
    ``reorder_cache`` for beam search, ``is_compileable``); a recurrent state cannot be cropped, so ``crop`` only
    accepts 0.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"TTTCache: num_layers must be a positive integer (config.num_hidden_layers); got {num_layers!r}"
            )
        self.blocks: list[TTTBlockCache | None] = [None] * num_layers
        self.seen_tokens = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        return f"TTTCache(num_layers={len(self.blocks)}, seen_tokens={self.seen_tokens}, batch_size={self.batch_size})"

    @property
    def batch_size(self) -> int | None:
        """Batch size of the stored state, or None while the cache is empty."""
        for block in self.blocks:
            if block is not None:
                return block.ttt.state.weights[0].shape[0]
        return None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens consumed so far (the same for every layer)."""
        return self.seen_tokens

    def get_max_length(self) -> int:
        """-1: a recurrent state has no maximum length."""
        return -1

    def reset(self) -> None:
        """Forget everything: the next forward call starts a new sequence."""
        self.blocks = [None] * len(self.blocks)
        self.seen_tokens = 0

    def _map(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.blocks = [None if block is None else _map_block(block, fn) for block in self.blocks]

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Keep batch rows ``beam_idx`` (LongTensor (new_batch,)), as beam search needs."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep batch rows ``indices``."""
        self._map(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every batch row ``repeats`` times (row i becomes rows i·repeats … i·repeats + repeats − 1)."""
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def detach(self) -> TTTCache:
        """A copy cut from the autograd graph (between truncated-BPTT segments); this cache is unchanged."""
        out = TTTCache(len(self.blocks))
        out.blocks = [None if block is None else _map_block(block, Tensor.detach) for block in self.blocks]
        out.seen_tokens = self.seen_tokens
        return out

    def crop(self, tokens_to_remove: int) -> None:
        """Only ``crop(0)`` is possible: a recurrent state cannot be rolled back to an earlier position."""
        if tokens_to_remove != 0:
            raise ValueError(
                f"TTTCache cannot remove {tokens_to_remove} tokens: the TTT state is recurrent and cannot be rolled "
                "back; keep a copy (cache.detach()) of the state you want to return to instead"
            )
