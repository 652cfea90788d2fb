"""AdamW with the papers' weight-decay rule, and the warm-up + cosine learning-rate schedule.

Weight decay (0.1 in both papers' recipes) applies, by default (``optim.decay: all``), to every trainable parameter,
as the reference trainers do: ttt-lm-jax (``get_weight_decay_exclusions()`` is empty), the TTT-E2E release
(``emb_wd: True`` by default: the embedding too) and flame, which trains flash-linear-attention's and LaCT's models
(torch AdamW over all parameters). Exempt are only the parameters a model marks ``_no_weight_decay = True`` (Mamba's
A_log and D, as mamba_ssm marks them) and those whose name matches a pattern of ``optim.no_decay`` (default: none).

``optim.decay: matrices`` is ours: decay on weight matrices only, not on (i) embeddings (and a tied LM head, the same
tensor), (ii) 1-D tensors, (iii) names matching ``bias``, ``norm`` (block norms, TTT's inner LayerNorm) or TTT's
inner biases ``b1``/``b2`` (which are (heads, dim) matrices), nor (iv) the marked parameters: decaying gains and
shifts pulls them towards 0, not towards the identity they start from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from tttlm.train.config import OptimConfig

# names exempt from weight decay under ``optim.decay: matrices`` (regex search), besides embeddings and 1-D tensors
MATRICES_ONLY_EXEMPT = ("bias", "norm", r"(^|\.)b\d+$")


def split_decay(model: nn.Module, no_decay: Sequence[str] = (), decay: str = "all") -> tuple[list[str], list[str]]:
    """Names of the parameters with and without weight decay under rule ``decay`` ("all" or "matrices", see the
    module docstring) and the extra exempt name patterns ``no_decay`` (each parameter once, tied ones under one
    name)."""
    matrices_only = decay == "matrices"
    patterns = [re.compile(p) for p in (*no_decay, *(MATRICES_ONLY_EXEMPT if matrices_only else ()))]
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decayed, skipped = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = (
            getattr(param, "_no_weight_decay", False)
            or any(p.search(name) for p in patterns)
            or (matrices_only and (param.dim() < 2 or id(param) in embedding_params))
        )
        (skipped if exempt else decayed).append(name)
    return decayed, skipped


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters in two groups: "decay" and "no_decay" (see the module docstring)."""
    params = dict(model.named_parameters())
    decay, skip = split_decay(model, config.no_decay, config.decay)
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": config.weight_decay, "name": "decay"},
        {"params": [params[n] for n in skip], "weight_decay": 0.0, "name": "no_decay"},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.lr, betas=tuple(config.betas), eps=config.eps
    )


def lr_at(step: int, config: OptimConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``lr``, then cosine decay to ``min_lr``.

    The first warm-up step already moves (lr / warmup_steps), warm-up reaches ``lr`` at step ``warmup_steps - 1``,
    and the cosine reaches ``min_lr`` at the last step.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, total_steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))
