"""``E2ECache``: what a TTT-E2E model carries between forward calls. Its size does not grow with the context.

Per block, its ``E2EBlockState``: the rolling sliding-window KV cache of the stack models (the last window − 1 keys
and values) and, with ``short_conv``, the conv sub-block's last kernel − 1 inputs. Per updated block, in addition,
the current fast weights W_i of its prime MLP, one copy per sequence. And the open mini-batch: the tokens of the
mini-batch whose inner step has not been taken yet (its inputs to the first updated block, its token ids, and the
updated blocks' states as they were at its start), so that the step can be taken exactly, by recomputing the updated
blocks on that mini-batch, once the mini-batch is complete and the token after it (the target of its last position)
has arrived. All of this is bounded by the window, the conv kernel and b.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from tttlm.layers.attention import KVCache
from tttlm.models.cache import BlockCache, map_tensors


class E2EBlockState(NamedTuple):
    """What an ``E2EBlock`` carries from one call to the next (B = batch, d = hidden, K = ``conv_kernel``).

    Attributes:
        attn: the attention's rolling KV cache.
        conv: with ``short_conv``, the conv sub-block's last K − 1 inputs (B, K − 1, d); None without it.
    """

    attn: KVCache
    conv: Tensor | None


class E2EBlockCache(NamedTuple):
    """One block's entry of the cache.

    Attributes:
        state: the block's own state (``E2EBlockState``).
        fast: updated blocks only: the prime MLP's current weights (gate (B, d, m), up (B, d, m), down (B, m, d)),
            one copy per sequence; None means the initial weights W0 (no step taken yet).
        start_state: updated blocks only: ``state`` as it was at the start of the open mini-batch, from which its
            step recomputes the block (None when no mini-batch is open, or when it opened at the start of the
            stream).
    """

    state: E2EBlockState
    fast: tuple[Tensor, Tensor, Tensor] | None = None
    start_state: E2EBlockState | None = None


class OpenMiniBatch(NamedTuple):
    """The tokens seen since the last inner step, 1 to b of them (B = batch, p = tokens, d = hidden).

    Attributes:
        inputs: (B, p, d) hidden states entering the first updated block.
        ids: (B, p) their token ids (the targets of the inner loss, shifted by one).
    """

    inputs: Tensor
    ids: Tensor


class E2ECache(BlockCache):
    """Block states, fast weights and the open mini-batch of an ``E2EForCausalLM``, updated in place.

    Attributes:
        blocks: per block an ``E2EBlockCache`` (None before the first call).
        open: the open mini-batch, or None.
        seen_tokens: number of tokens consumed so far.

    The transformers ``Cache`` methods that ``generate`` needs (``reorder_cache`` for beam search, ...) and
    ``detach`` come from ``BlockCache`` and act on every tensor here, the fast weights and the open mini-batch
    included.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__(num_layers)
        self.open: OpenMiniBatch | None = None

    def __repr__(self) -> str:
        pending = 0 if self.open is None else self.open.ids.shape[1]
        return (
            f"E2ECache(num_layers={len(self.blocks)}, seen_tokens={self.seen_tokens}, batch_size={self.batch_size}, "
            f"open_tokens={pending})"
        )

    def reset(self) -> None:
        """Forget everything, fast weights included: the next forward call starts a new sequence from W0."""
        super().reset()
        self.open = None

    def _map(self, fn: Callable[[Tensor], Tensor]) -> None:
        super()._map(fn)
        self.open = map_tensors(self.open, fn)
