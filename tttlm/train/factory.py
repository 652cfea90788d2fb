"""Building the model to train from ``(arch, size, overrides)``.

The trainer calls ``make_model`` and nothing else, so it never branches on the architecture: every arch of the
model registry (``tttlm.models.build``: ttt-linear, ttt-mlp, transformer, swa, hybrid, mamba, mamba2,
gated-deltanet, ttt-kvb) is a transformers causal LM whose ``forward(input_ids, labels=...)`` returns ``.loss``.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from tttlm.models import ARCHS, build


def make_model(
    arch: str, size: str, overrides: dict[str, Any] | None = None, match_params: str | None = None
) -> PreTrainedModel:
    """A freshly initialised causal LM of ``arch`` (one of ``tttlm.models.ARCHS``) at ``size`` ("tiny", "125m", ...).

    ``overrides`` are config fields that replace the preset's (the trainer passes ``vocab_size`` this way);
    ``match_params`` as in ``tttlm.models.build`` (None: the papers' widths). Initialisation uses the global torch
    RNG: seed it first for a reproducible model.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown model.arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return build(arch, size, match_params=match_params, **dict(overrides or {}))
