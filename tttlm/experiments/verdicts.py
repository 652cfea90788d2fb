"""A paper's claim against the 95% interval of what we measured: reproduced, contradicted or not resolved.

A claim says that a measured quantity (a difference or a ratio between two arms, or one arm's value) lies on one
side of a threshold (``<`` or ``>``), or within ``± tolerance`` of it (``≈``). The verdict:

- ``<`` / ``>``: *reproduced* when the whole interval is on the claimed side, *contradicted* when the whole interval
  is on the other side, *not resolved at this scale* when it covers the threshold (it is consistent with both).
- ``≈``: *reproduced* when the whole interval lies within the tolerance band, *contradicted* when it lies wholly
  outside it, *not resolved* otherwise.

A claim about an arm that scored 0 at every point of its metric with every seed (an accuracy: S-NIAH, MQAR) is
*not resolved: did not learn the task* whatever the interval says: 0 against 0 is no finding about the archs.
"""

from __future__ import annotations

import math

from tttlm.experiments.stats import Interval

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
NOT_RESOLVED = "not resolved at this scale"
NOT_RUN = "not run"
DID_NOT_LEARN = "not resolved: did not learn the task"
EXPECTATIONS = ("<", ">", "≈")


def verdict(interval: Interval, expect: str, threshold: float = 0.0, tolerance: float = 0.0) -> str:
    """The verdict on the claim "the quantity ``expect`` ``threshold``" given its measured ``interval``."""
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {', '.join(EXPECTATIONS)}; got {expect!r}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0; got {tolerance!r}")
    low, high = interval.low, interval.high
    if expect == "≈":
        if threshold - tolerance <= low and high <= threshold + tolerance:
            return REPRODUCED
        if high < threshold - tolerance or low > threshold + tolerance:
            return CONTRADICTED
        return NOT_RESOLVED
    below, above = high < threshold, low > threshold
    if expect == "<":
        return REPRODUCED if below else CONTRADICTED if above else NOT_RESOLVED
    return REPRODUCED if above else CONTRADICTED if below else NOT_RESOLVED
