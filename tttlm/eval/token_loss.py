"""Per-token losses of one sequence, streamed through a model in chunks that carry its cache.

Only the registry's contract is used; a model whose cache cannot continue a multi-token call
(``supports_chunked_prefill`` False) gets the input in one call instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tttlm.eval.loading import model_device
from tttlm.models.hf_compat import cache_argument, output_cache
from tttlm.models.streaming import supports_chunked_prefill


@torch.no_grad()
def token_losses(model: torch.nn.Module, ids: Sequence[int] | np.ndarray | Tensor, chunk_size: int) -> np.ndarray:
    """Next-token losses of one sequence, streamed in chunks of ``chunk_size`` tokens.

    Args:
        ids: (T,) token ids.
    Returns:
        (T − 1,) float64: entry t is −log p(ids[t + 1] | ids[: t + 1]).

    Unlike ``tttlm.models.streaming.prefill`` (float32 losses), the cross-entropy is taken in the logits' own dtype
    when it is float64, so a float64 model gives losses that can be compared exactly between chunkings.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).to(model_device(model)).view(1, -1)
    seq = ids.shape[1]
    if seq < 2:
        raise ValueError(f"need at least 2 tokens to score; got {seq}")
    step = chunk_size if supports_chunked_prefill(model) else seq
    cache, out_losses = None, []
    for start in range(0, seq - 1, step):  # the last token is only a target
        end = min(start + step, seq - 1)
        out = model(ids[:, start:end], **cache_argument(cache), use_cache=True)
        cache = output_cache(out)
        logits = out.logits[0]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        out_losses.append(F.cross_entropy(logits, ids[0, start + 1 : end + 1], reduction="none").double().cpu())
        del out, logits
    return torch.cat(out_losses).numpy()
