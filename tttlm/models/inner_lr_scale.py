"""``InnerLrScaled``: the outer trainer's handle on the inner learning rate of a model's test-time-training layers.

A layer with an inner learning rate (``TTTLayer``, the LaCT fast-weight layer) has a float attribute
``inner_lr_scale`` (1.0 after construction; not saved) that multiplies its inner learning rate, and
``inner_lr_warmup_ratio``: the start of its family's warm-up as a fraction of the base rate (None: no warm-up in its
recipe). The trainer (``tttlm.train.inner_lr``) calls ``set_inner_lr_scale`` each outer step.
"""

from __future__ import annotations

from torch import nn


class InnerLrScaled:
    """Mixin for a ``PreTrainedModel`` whose layers may have an inner learning rate."""

    def _inner_lr_layers(self: nn.Module) -> list[nn.Module]:
        return [m for m in self.modules() if hasattr(m, "inner_lr_scale")]

    @property
    def has_inner_lr(self) -> bool:
        """Whether any layer of the model has an inner learning rate to scale."""
        return bool(self._inner_lr_layers())

    @property
    def inner_lr_warmup_ratio(self) -> float | None:
        """The start of the recipe's inner-lr warm-up as a fraction of the base rate (None: no warm-up)."""
        ratios = {m.inner_lr_warmup_ratio for m in self._inner_lr_layers()} - {None}
        return min(ratios) if ratios else None

    def set_inner_lr_scale(self, scale: float) -> None:
        """Multiply every inner learning rate of the model by ``scale`` (>= 0) from the next forward call on."""
        if not scale >= 0:
            raise ValueError(f"the inner learning-rate scale must be >= 0; got {scale}")
        for layer in self._inner_lr_layers():
            layer.inner_lr_scale = float(scale)
