"""Mean and 95% Student-t interval of a quantity measured once per seed.

The interval is ``mean ± t(0.975, n − 1) · s / √n`` with ``s`` the sample standard deviation (n − 1 in the
denominator): the interval that covers the true mean in 95% of repetitions when the per-seed values are independent
and roughly normal. One value has no interval (both ends infinite): one seed cannot say how sure it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# t(0.975, df) for df = 1 ... 30 (scipy.stats.t.ppf, 6 decimals); larger df use the Cornish-Fisher expansion below
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (exact to 1e-6 for df ≤ 30, and to 2e-6
    beyond by the Cornish-Fisher expansion of t around the normal quantile)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an integer >= 1; got {df!r}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class Interval:
    """``mean`` of ``n`` values with the 95% t-interval ``[low, high]`` (infinite for n = 1) and their std."""

    mean: float
    low: float
    high: float
    std: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_json(self) -> dict[str, float | int | None]:
        """Plain data; the infinite ends of a one-value interval become None (JSON has no infinity)."""
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}

    def text(self, digits: int = 4) -> str:
        """``mean ± half-width`` to ``digits`` significant digits (``mean (1 seed)`` when there is no interval)."""
        if self.n == 1:
            return f"{self.mean:.{digits}g} (1 seed)"
        return f"{self.mean:.{digits}g} ± {self.half_width:.{max(2, digits - 2)}g}"


def t_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t-interval of ``values`` (one per seed); ``ValueError`` for no values or a non-finite one."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise: every run of this quantity is missing")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite value among {values}: a run diverged or an evaluation failed")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, math.nan, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, std, n)
