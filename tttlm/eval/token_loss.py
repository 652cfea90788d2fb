"""Per-token losses of one sequence, streamed through a model in chunks that carry its cache.

The chunk loop is ``models.streaming.prefill``'s: only the registry's contract is used, and a model whose cache
cannot continue a multi-token call (``supports_chunked_prefill`` False) gets the input in one call instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tttlm.eval.loading import model_device
from tttlm.models.streaming import prefill


def token_losses(model: torch.nn.Module, ids: Sequence[int] | np.ndarray | Tensor, chunk_size: int) -> np.ndarray:
    """Next-token losses of one sequence, streamed in chunks of ``chunk_size`` tokens (``models.streaming.prefill``).

    Args:
        ids: (T,) token ids.
    Returns:
        (T − 1,) float64: entry t is −log p(ids[t + 1] | ids[: t + 1]), computed in the logits' precision (at least
        float32), so a float64 model gives losses that can be compared exactly between chunkings.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).to(model_device(model)).view(1, -1)
    if ids.shape[1] < 2:
        raise ValueError(f"need at least 2 tokens to score; got {ids.shape[1]}")
    return prefill(model, ids, chunk_size).token_loss[0].double().cpu().numpy()
