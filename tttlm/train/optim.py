"""AdamW with the papers' weight-decay rule, and the warm-up + cosine learning-rate schedule.

Weight decay (0.1 in the TTT paper's recipe, which follows Mamba's "improved recipe") applies to the weight
matrices: linear projections, MLPs, TTT's initial inner weights W0 and its learning-rate gate. It does not apply to
(i) embeddings (and a tied LM head, the same tensor), (ii) 1-D tensors, (iii) parameters whose name matches a
pattern of ``optim.no_decay`` (default: ``bias``, ``norm`` — block norms and TTT's inner LayerNorm — and
``b1``/``b2``, TTT's inner biases, which are (heads, dim) matrices), and (iv) parameters a model marks with
``_no_weight_decay = True`` (Mamba's A_log and D do). Decaying gains and shifts would pull them towards 0, not
towards the identity they start from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from tttlm.train.config import OptimConfig


def split_decay(model: nn.Module, no_decay: Sequence[str]) -> tuple[list[str], list[str]]:
    """Names of the parameters with and without weight decay (each parameter once, tied ones under one name)."""
    patterns = [re.compile(p) for p in no_decay]
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, skip = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = (
            param.dim() < 2
            or id(param) in embedding_params
            or getattr(param, "_no_weight_decay", False)
            or any(p.search(name) for p in patterns)
        )
        (skip if exempt else decay).append(name)
    return decay, skip


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters in two groups: "decay" and "no_decay" (see the module docstring)."""
    params = dict(model.named_parameters())
    decay, skip = split_decay(model, config.no_decay)
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
