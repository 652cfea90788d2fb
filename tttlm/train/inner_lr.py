"""Warm-up of a test-time-training model's inner learning rate over the first outer steps.

ttt-lm-jax warms TTT-MLP's inner base learning rate from 0.01 to 0.1 over the outer warm-up steps (its README and
``scripts/ttt_mlp/*.sh``: ``ttt_base_lr_init=0.01, ttt_base_lr_warmup=<outer warm-up>``); the TTT-E2E release warms
its inner learning rate from ``ilr_init`` over ``ilr_warmup_steps`` (``configs/training/*/pretrain-8K.yaml``: 10% of
the steps). The trainer computes ``inner_lr_multiplier`` each outer step and calls ``model.set_inner_lr_scale``
on a model that has that method; the model multiplies its inner learning rate by it.

The formula is the TTT-E2E release's (``ttt/model/transformer.py``, ``get_ilr_multiplier``)::

    progress = min(1, (step + 1) / warmup_steps)
    lr = init + (base - init) * progress,   init = init_ratio * base
    multiplier = lr / base

ttt-lm-jax's ``make_get_ttt_lr_mult`` uses ``(step - 1)`` with 1-based steps, i.e. one step later than this; we
follow the newer release for both families.

The train-config key ``train.inner_lr_warmup`` (see ``parse_warmup``):

* ``auto`` (default): the arch's own recipe: from ``model.inner_lr_warmup_ratio`` times the base rate over the outer
  learning rate's warm-up (``optim.warmup_steps``; 10% of the steps in both papers' configs). TTT-MLP: 0.1
  (0.01 → 0.1); TTT-Linear and models without an inner learning rate: none;
* ``off``: no warm-up (multiplier 1 throughout);
* ``{init_ratio: R, fraction: F}``: from ``R`` times the base rate to the base rate over the first ``F`` of the
  outer steps (``round(F * train.steps)`` steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn


class WarmupError(ValueError):
    """An inner-learning-rate warm-up setting is invalid; the message names the value and the fix."""


@dataclass(frozen=True)
class InnerLrWarmup:
    """Warm-up from ``init_ratio`` times the base inner learning rate over the first ``fraction`` of the outer steps
    (None: over the outer learning rate's warm-up, ``optim.warmup_steps``)."""

    init_ratio: float
    fraction: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("init_ratio", self.init_ratio), ("fraction", self.fraction)):
            if value is None and name == "fraction":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise WarmupError(f"inner_lr_warmup.{name} must be a finite number; got {value!r}")
            if not 0 <= value <= 1:
                raise WarmupError(f"inner_lr_warmup.{name} must be in [0, 1] ({_MEANING[name]}, e.g. 0.1); got {value}")

    def steps(self, total_steps: int, outer_warmup_steps: int) -> int:
        """Outer steps the warm-up takes in a run of ``total_steps`` whose learning rate warms up over
        ``outer_warmup_steps``."""
        return outer_warmup_steps if self.fraction is None else round(self.fraction * total_steps)


_MEANING = {
    "init_ratio": "the start as a fraction of the base inner learning rate",
    "fraction": "the share of the outer steps",
}


def inner_lr_multiplier(step: int, init_ratio: float, warmup_steps: int) -> float:
    """Factor on the base inner learning rate at 0-based outer step ``step``; 1.0 when ``warmup_steps`` is 0.

    ``init_ratio * base`` rises linearly to ``base``, reaching it at step ``warmup_steps - 1`` (the formula is in
    the module docstring).
    """
    if step < 0 or warmup_steps < 0:
        raise WarmupError(f"step and warmup_steps must be >= 0; got step={step}, warmup_steps={warmup_steps}")
    if warmup_steps == 0:
        return 1.0
    progress = min(1.0, (step + 1) / warmup_steps)
    # lr / base with init = init_ratio * base, the base divided out
    return init_ratio + (1.0 - init_ratio) * progress


def parse_warmup(where: str, value: Any) -> str | dict[str, float]:
    """The config value of ``train.inner_lr_warmup`` as stored: ``"auto"``, ``"off"`` or ``{init_ratio, fraction}``.

    Raises WarmupError naming ``where`` for anything else.
    """
    if value is None or value is False:
        return "off"
    if value in ("auto", "off"):
        return value
    if not isinstance(value, dict) or set(value) != {"init_ratio", "fraction"}:
        raise WarmupError(
            f"{where} must be auto, off, or a mapping {{init_ratio: R, fraction: F}} (e.g. {{init_ratio: 0.1, "
            f"fraction: 0.1}}: from 10% of the inner learning rate over the first 10% of the steps); got {value!r}"
        )
    try:
        warmup = InnerLrWarmup(value["init_ratio"], value["fraction"])
    except WarmupError as error:
        raise WarmupError(f"{where}: {error}") from None
    return {"init_ratio": float(warmup.init_ratio), "fraction": float(warmup.fraction)}


def resolve_warmup(setting: str | dict[str, float], model: nn.Module) -> InnerLrWarmup | None:
    """The warm-up a run of ``model`` uses (None: none).

    ``off``: none. ``auto``: the model's recipe, ``model.inner_lr_warmup_ratio`` over the outer warm-up (none for
    a model without ``set_inner_lr_scale`` or without a ratio). An explicit setting on a model with no inner
    learning rate raises WarmupError.
    """
    if setting == "off":
        return None
    scalable = hasattr(model, "set_inner_lr_scale") and getattr(model, "has_inner_lr", True)
    if setting == "auto":
        ratio = getattr(model, "inner_lr_warmup_ratio", None) if scalable else None
        return None if ratio is None else InnerLrWarmup(ratio)
    if not scalable:
        raise WarmupError(
            f"train.inner_lr_warmup is {setting} but {type(model).__name__} has no inner learning rate to warm up; "
            "set it to auto or off"
        )
    return InnerLrWarmup(**setting)
