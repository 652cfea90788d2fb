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

import torch
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
        seen_tokens: number of tokens consumed so far (the HF "sequence length" of the cache; with padding, the
            number of columns, pads included, as ``generate`` counts them).
        rows: None, or one cache per sequence of the batch (None for a row not started yet) once a padded batch
            was seen: rows of different lengths are at different positions of their recurrence (mini-batch
            offsets, windows), so from then on each row is run on its own (``base.forward_by_row``).

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
        self.rows: list[BlockCache | None] | None = None

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
        if self.rows is not None:
            return len(self.rows)
        tensor = _first_tensor(tuple(self.blocks))
        return None if tensor is None else tensor.shape[0]

    def split_rows(self, batch: int) -> list[BlockCache | None]:
        """One cache per sequence: the rows cache's own, or this batched state cut into rows (None while empty)."""
        if self.rows is not None:
            return list(self.rows)
        if self.batch_size is None:
            return [None] * batch
        return [self._mapped(lambda t, i=i: t[i : i + 1]) for i in range(batch)]

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
        self.rows = None

    def _map(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.blocks = [map_tensors(block, fn) for block in self.blocks]
        if self.rows is not None:
            self.rows = [None if row is None else row._mapped(fn) for row in self.rows]

    def _mapped(self, fn: Callable[[Tensor], Tensor]) -> BlockCache:
        """A copy with ``fn`` applied to every tensor (new containers throughout: updating the copy in place
        leaves this cache as it is)."""
        out = copy.copy(self)
        out._map(fn)
        return out

    def _select_rows(self, indices: list[int]) -> None:
        # each kept row gets containers of its own: beam search may keep one row twice, and forward updates rows
        # in place
        assert self.rows is not None
        self.rows = [None if self.rows[i] is None else self.rows[i]._mapped(lambda t: t) for i in indices]

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Keep batch rows ``beam_idx`` (LongTensor (new_batch,)), as beam search needs."""
        if self.rows is not None:
            self._select_rows(beam_idx.tolist())
        else:
            self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep batch rows ``indices``."""
        if self.rows is not None:
            self._select_rows(torch.arange(len(self.rows))[indices.cpu()].tolist())
        else:
            self._map(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every batch row ``repeats`` times (row i becomes rows i·repeats … i·repeats + repeats − 1)."""
        if self.rows is not None:
            self._select_rows([i for i in range(len(self.rows)) for _ in range(repeats)])
        else:
            self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def detach(self) -> BlockCache:
        """A copy cut from the autograd graph (between truncated-BPTT segments); this cache is unchanged."""
        return self._mapped(Tensor.detach)

    def crop(self, tokens_to_remove: int) -> None:
        """Only ``crop(0)`` is possible: a recurrent state cannot be rolled back to an earlier position."""
        if tokens_to_remove != 0:
            raise ValueError(
                f"{type(self).__name__} cannot remove {tokens_to_remove} tokens: recurrent states and sliding KV "
                "windows cannot be rolled back; keep a copy (cache.detach()) of the state you want to return to instead"
            )
