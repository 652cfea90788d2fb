"""``BlockCache``: what a stack of blocks carries between forward calls, the base of every family's cache
(``ttt.cache.TTTCache``, ``stack.cache.StackCache``, ``e2e.cache.E2ECache``).

Each block's entry is a nest of named tuples of tensors; the cache maps a function over all of them for the
transformers ``Cache`` methods that ``generate`` uses (beam reordering, batch selection), so a family only says
what its blocks hold.
"""

from __future__ import annotations

import copy
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


class BlockCache:
    """What a stack of blocks carries between forward calls, updated in place by every call that receives it.

    ``model(ids, past_key_values=cache, use_cache=True)`` continues the sequence from where the cache stands and
    returns the same object, updated; an empty cache starts a sequence, and a forward call with ``use_cache=True``
    and no cache creates one.

    Attributes:
        blocks: one cache per block (a nest of named tuples of tensors), or None before the first forward call.
        seen_tokens: number of tokens consumed so far (the HF "sequence length" of the cache).

    It follows the parts of the transformers ``Cache`` interface that ``generate`` uses (``get_seq_length``,
    ``reorder_cache`` for beam search, batch selection, ``is_compileable``); recurrent states and sliding KV windows
    cannot be rolled back, so ``crop`` only accepts 0.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"{type(self).__name__}: num_layers must be a positive integer (config.num_hidden_layers); "
                f"got {num_layers!r}"
            )
        self.blocks: list[Any] = [None] * num_layers
        self.seen_tokens = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_layers={len(self.blocks)}, seen_tokens={self.seen_tokens}, "
            f"batch_size={self.batch_size})"
        )

    @property
    def is_linear(self) -> list[bool]:
        """Per layer, whether transformers (5.24 on) should treat it as a linear-attention state whose length it
        cannot ask; ours count their tokens (``get_seq_length``), so ``generate`` may slice a prompt by it."""
        return [False] * len(self.blocks)

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
        """Repeat every batch row ``repeats`` times (row i becomes rows i·repeats … i·repeats + repeats − 1)."""
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def detach(self) -> BlockCache:
        """A copy cut from the autograd graph (between truncated-BPTT segments); this cache is unchanged."""
        out = copy.copy(self)  # the same attributes; ``_map`` then replaces every nest holding tensors
        out._map(Tensor.detach)
        return out

    def crop(self, tokens_to_remove: int) -> None:
        """Only ``crop(0)`` is possible: a recurrent state cannot be rolled back to an earlier position."""
        if tokens_to_remove != 0:
            raise ValueError(
                f"{type(self).__name__} cannot remove {tokens_to_remove} tokens: recurrent states and sliding KV "
                "windows cannot be rolled back; keep a copy (cache.detach()) of the state you want to return to instead"
            )
