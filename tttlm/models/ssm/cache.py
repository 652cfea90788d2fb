"""``SSMCache``: the library's ``DynamicCache`` of Mamba layers, counting the tokens seen (which ``generate`` asks
for and the Mamba layers do not track)."""

from __future__ import annotations

from typing import Any

from transformers import DynamicCache


class SSMCache(DynamicCache):
    """The library's ``DynamicCache`` (conv and SSM states per Mamba layer) that also counts the tokens seen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens consumed so far (``generate`` asks; Mamba layers do not track it themselves)."""
        return self.seen_tokens
