"""Streaming a long input through any registry model in chunks, carrying its cache (used by the evaluators).

Archs whose cache continues multi-token calls exactly (every registry arch) are fed ``chunk_size`` tokens per call,
so memory is bounded by the chunk; per-token losses are computed chunk by chunk so the (T × vocab) logits are never
held at once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from tttlm.models.hf_compat import cache_argument, output_cache


def supports_chunked_prefill(model: PreTrainedModel) -> bool:
    """Whether a multi-token forward call continues the model's cache exactly: True for every registry arch; a model
    may say False (class attribute ``supports_chunked_prefill``) to be fed its input in one call."""
    return getattr(model, "supports_chunked_prefill", True)


class Prefill(NamedTuple):
    """What ``prefill`` returns.

    Attributes:
        past_key_values: the cache after the whole input (continue with ``model(..., past_key_values=...)`` or
            ``generate``).
        last_logits: (batch, vocab) float32 logits at the last position (the prediction of the next token).
        token_loss: (batch, T − 1) next-token cross-entropy in the logits' precision, at least float32 (a float64
            model's losses are float64, so they compare exactly between chunkings): ``token_loss[:, t]`` is the loss
            of ``input_ids[:, t + 1]`` given ``input_ids[:, : t + 1]``; None with ``token_loss=False``.
    """

    past_key_values: Any
    last_logits: Tensor
    token_loss: Tensor | None


@torch.no_grad()
def prefill(model: PreTrainedModel, input_ids: Tensor, chunk_size: int, *, token_loss: bool = True) -> Prefill:
    """Stream ``input_ids`` (batch, T) through ``model`` in chunks of ``chunk_size`` tokens, carrying the cache.

    Memory stays bounded by the chunk (logits are reduced to per-token losses chunk by chunk) for every model whose
    cache continues multi-token calls (all registry archs); a model without that (``supports_chunked_prefill``
    False) gets the input in one call, which is exact but needs memory for all T positions.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be a (batch, T) tensor of token ids with T >= 1")
    seq = input_ids.shape[1]
    step = chunk_size if supports_chunked_prefill(model) else seq
    cache, losses, last = None, [], None
    for start in range(0, seq, step):
        end = min(start + step, seq)
        # without per-token losses only the last position's logits are needed: skip the LM head elsewhere
        keep = {} if token_loss else {"logits_to_keep": 1}
        out = model(input_ids[:, start:end], **cache_argument(cache), use_cache=True, **keep)
        cache = output_cache(out)
        logits = out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))
        last = logits[:, -1].to(torch.float32, copy=True)  # not a view that would keep the chunk's logits alive
        if token_loss:
            targets = input_ids[:, start + 1 : end + 1]
            n = targets.shape[1]
            nll = F.cross_entropy(logits[:, :n].flatten(0, 1), targets.flatten(), reduction="none")
            losses.append(nll.view(targets.shape))
        del out, logits
    return Prefill(cache, last, torch.cat(losses, dim=1) if token_loss else None)
