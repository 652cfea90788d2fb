"""Evaluation: perplexity vs context length, loss by token index, S-NIAH (RULER), generation, run comparison.

Every evaluator talks to a model only through the registry's call contract (``model(ids, past_key_values=cache,
use_cache=True)`` returning ``.logits`` and ``.past_key_values``) and ``supports_chunked_prefill``, so it works for any
arch in ``tttlm.models.registry`` without arch-specific code.
"""

from tttlm.eval.generate import generate_tokens
from tttlm.eval.loading import Checkpoint, resolve_checkpoint
from tttlm.eval.niah import TASKS, NiahSample, NiahTaskMaker, ruler_match
from tttlm.eval.perplexity import loss_by_position, perplexity_vs_context
from tttlm.eval.token_loss import token_losses

__all__ = [
    "TASKS",
    "Checkpoint",
    "NiahSample",
    "NiahTaskMaker",
    "generate_tokens",
    "loss_by_position",
    "perplexity_vs_context",
    "resolve_checkpoint",
    "ruler_match",
    "token_losses",
]
