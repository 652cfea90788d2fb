"""``StackCache``: what a ``StackModel`` carries between forward calls, one tuple of mixer caches per block.

Per mixer: a ``KVCache`` (attention: all keys for full attention, the last window − 1 for sliding-window
attention), a ``GatedDeltaNetCache`` (state and conv states) or a ``TTTLayerCache``. Sliding-window, Gated
DeltaNet and TTT caches have a fixed size; full attention's grows with the sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor


def map_tensors(tree: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor of a nest of (named) tuples; other leaves (positions, None) are kept."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, tuple):
        items = [map_tensors(item, fn) for item in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return tree


def _first_tensor(tree: Any) -> Tensor | None:
    if isinstance(tree, Tensor):
        return tree
    if isinstance(tree, tuple):
        for item in tree:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class StackCache:
    """Recurrent state and KV windows of a ``StackModel``, updated in place by every forward call that receives it.

    Attributes:
        blocks: per block, a tuple with one cache per mixer (in ``config.layer_mixers`` order), or None before
            the first forward call.
        seen_tokens: number of tokens consumed so far.

    Follows the parts of the transformers ``Cache`` interface that ``generate`` uses, like ``TTTCache``; the
    recurrent mixers cannot be rolled back, so ``crop`` only accepts 0.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"StackCache: num_layers must be a positive integer (config.num_hidden_layers); got {num_layers!r}"
            )
        self.blocks: list[tuple | None] = [None] * num_layers
        self.seen_tokens = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        return (
            f"StackCache(num_layers={len(self.blocks)}, seen_tokens={self.seen_tokens}, batch_size={self.batch_size})"
        )

    @property
    def batch_size(self) -> int | None:
        """Batch size of the stored state, or None while the cache is empty."""
        tensor = _first_tensor(tuple(self.blocks))
        return None if tensor is None else tensor.shape[0]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens consumed so far (the same for every layer)."""
        return self.seen_tokens

    def get_max_length(self) -> int:
        """-1: no maximum length."""
        return -1

    def reset(self) -> None:
        """Forget everything: the next forward call starts a new sequence."""
        self.blocks = [None] * len(self.blocks)
        self.seen_tokens = 0

    def _map(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.blocks = [map_tensors(block, fn) for block in self.blocks]

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Keep batch rows ``beam_idx`` (LongTensor (new_batch,)), as beam search needs."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep batch rows ``indices``."""
        self._map(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every batch row ``repeats`` times."""
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def detach(self) -> StackCache:
        """A copy cut from the autograd graph (between truncated-BPTT segments); this cache is unchanged."""
        out = StackCache(len(self.blocks))
        out.blocks = [map_tensors(block, Tensor.detach) for block in self.blocks]
        out.seen_tokens = self.seen_tokens
        return out

    def crop(self, tokens_to_remove: int) -> None:
        """Only ``crop(0)`` is possible: recurrent states and KV windows cannot be rolled back."""
        if tokens_to_remove != 0:
            raise ValueError(
                f"StackCache cannot remove {tokens_to_remove} tokens: recurrent states and sliding KV windows cannot "
                "be rolled back; keep a copy (cache.detach()) of the state you want to return to instead"
            )
