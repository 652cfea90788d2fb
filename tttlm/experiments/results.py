"""From per-run measurements to the experiment's numbers: every metric of every arm and point as a mean with its
95% interval over seeds, and every claim's quantity with its verdict.

A claim's quantity is computed per seed (``a − b`` or ``a / b`` of the two arms' runs with that seed; seeds that
only one side has are left out), then summarised, so the interval of a difference is that of the paired
per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tttlm.experiments.plan import RunPlan
from tttlm.experiments.spec import Claim, MetricRef, Spec, SpecError, split_metric
from tttlm.experiments.stats import Interval, t_interval
from tttlm.experiments.verdicts import DID_NOT_LEARN, NOT_RESOLVED, NOT_RUN, verdict


def resolve_metric(metrics: dict[str, float], name: str) -> float:
    """``metrics[name]``, where ``name`` may end in ``@first``, ``@last`` or ``@<index>``: that point among the
    metric's points in the order they were measured; ``SpecError`` naming the metrics there are otherwise."""
    if name in metrics:
        return metrics[name]
    base, _, selector = name.rpartition("@")
    points = [key for key in metrics if key.rpartition("@")[0] == base]
    index = {"first": 0, "last": -1}.get(selector)
    if index is None and selector.lstrip("-").isdigit():
        index = int(selector)
    if base and points and index is not None and -len(points) <= index < len(points):
        return metrics[points[index]]
    raise SpecError(f"no metric {name!r} among the run's metrics ({', '.join(metrics) or 'none'})")


@dataclass
class ClaimResult:
    """A claim with its per-seed quantity, interval and verdict (``reason`` says why it was not run)."""

    claim: Claim
    per_seed: dict[int, float] = field(default_factory=dict)
    interval: Interval | None = None
    verdict: str = NOT_RUN
    reason: str | None = None

    def to_json(self, spec: Spec) -> dict[str, Any]:
        claim = self.claim
        return {
            "id": claim.id,
            "source": claim.source,
            "claim": claim.text,
            "paper": claim.paper,
            "quantity": quantity_text(claim, spec),
            "expect": expectation_text(claim),
            "per_seed": self.per_seed,
            "interval": self.interval.to_json() if self.interval else None,
            "verdict": self.verdict,
            "reason": self.reason,
            "note": claim.note,
        }


@dataclass
class Summary:
    """Everything the report shows: ``values[arm][point_label][metric]`` = {seed: value}, the intervals of the same
    shape, the curves ``curves[arm][point_label][name]`` = {seed: list}, the claims and the arms not run."""

    spec: Spec
    seeds: list[int]
    plans: list[RunPlan]
    values: dict[str, dict[str, dict[str, dict[int, float]]]]
    intervals: dict[str, dict[str, dict[str, Interval]]]
    curves: dict[str, dict[str, dict[str, dict[int, list[float]]]]]
    claims: list[ClaimResult]
    not_run: dict[str, list[str]]


def _ref_text(ref: MetricRef, spec: Spec) -> str:
    arm = spec.arm(ref.arm)
    point = "" if ref.at is None else f"[{arm.sweep.symbol}={arm.points[ref.at]}]"
    return f"{ref.metric}({ref.arm}{point})"


def expectation_text(claim: Claim) -> str:
    """What the claim expects of its quantity, e.g. ``< 0`` or ``≈ 0 ± 0.05``."""
    band = f" ± {claim.tolerance:g}" if claim.expect == "≈" else ""
    return f"{claim.expect} {claim.threshold:g}{band}"


def quantity_text(claim: Claim, spec: Spec | None = None) -> str:
    """The claim's quantity as a formula, e.g. ``ppl@train(b1) − ppl@train(b64)``."""
    if spec is None:
        a, b = claim.a.metric + f"({claim.a.arm})", claim.b and claim.b.metric + f"({claim.b.arm})"
    else:
        a, b = _ref_text(claim.a, spec), claim.b and _ref_text(claim.b, spec)
    if b is None:
        return a
    return f"{a} − {b}" if claim.op == "difference" else f"{a} / {b}"


def _side(ref: MetricRef, spec: Spec, values: dict, by_arm: dict[str, list[RunPlan]]) -> dict[int, float]:
    arm = spec.arm(ref.arm)
    index = 0 if ref.at is None else ref.at % len(arm.points)
    out = {}
    for plan in by_arm[ref.arm]:
        if plan.point_index == index and plan.name in values:
            out[plan.seed] = resolve_metric(values[plan.name]["metrics"], ref.metric)
    return out


def _zero_everywhere(ref: MetricRef, measured: dict[str, dict], by_arm: dict[str, list[RunPlan]]) -> bool:
    """Whether ``ref``'s arm scored exactly 0 at every point of ``ref``'s metric, with every measured seed (and at
    every sweep point): an accuracy of a model that did not learn the task."""
    base = split_metric(ref.metric)[0]
    scores = [
        value
        for plan in by_arm[ref.arm]
        if plan.name in measured
        for name, value in measured[plan.name]["metrics"].items()
        if split_metric(name)[0] == base
    ]
    return bool(scores) and all(value == 0 for value in scores)


def judge(claim: Claim, spec: Spec, measured: dict[str, dict], plans: Sequence[RunPlan]) -> ClaimResult:
    """The claim's per-seed quantity, interval and verdict from the measured runs."""
    by_arm: dict[str, list[RunPlan]] = {}
    for plan in plans:
        by_arm.setdefault(plan.arm.name, []).append(plan)
    refs = [claim.a] + ([claim.b] if claim.b else [])
    gaps = sorted({gap for ref in refs for plan in by_arm[ref.arm] for gap in plan.missing})
    if gaps:
        return ClaimResult(claim, reason="; ".join(gaps))
    a = _side(claim.a, spec, measured, by_arm)
    b = _side(claim.b, spec, measured, by_arm) if claim.b else None
    seeds = sorted(a if b is None else set(a) & set(b))
    if not seeds:
        return ClaimResult(claim, reason="no seed has both sides measured")
    if b is None:
        per_seed = {s: a[s] for s in seeds}
    elif claim.op == "difference":
        per_seed = {s: a[s] - b[s] for s in seeds}
    else:
        per_seed = {s: a[s] / b[s] if b[s] else math.nan for s in seeds}
    per_seed = {s: v for s, v in per_seed.items() if math.isfinite(v)}
    if not per_seed:
        return ClaimResult(claim, reason="the quantity is not finite for any seed (a division by zero or a NaN metric)")
    interval = t_interval(list(per_seed.values()))
    result = ClaimResult(claim, per_seed, interval, verdict(interval, claim.expect, claim.threshold, claim.tolerance))
    if len(per_seed) == 1:
        result.verdict, result.reason = NOT_RESOLVED, "one seed: no interval"
    untrained = [ref.arm for ref in refs if _zero_everywhere(ref, measured, by_arm)]
    if untrained:
        result.verdict = DID_NOT_LEARN
        result.reason = f"{' and '.join(dict.fromkeys(untrained))} scored 0 at every point with every seed"
    return result


def _finite(values: Any) -> list[float]:
    """The finite values (a NaN metric, e.g. an accuracy over no examples, has no place in a mean)."""
    return [v for v in values if math.isfinite(v)]


def summarise(spec: Spec, plans: Sequence[RunPlan], measured: dict[str, dict]) -> Summary:
    """The ``Summary`` of the measured runs (keyed by ``RunPlan.name``) of ``plans``."""
    values: dict = {}
    curves: dict = {}
    not_run: dict[str, list[str]] = {}
    for plan in plans:
        if plan.missing:
            not_run[plan.arm.name] = list(plan.missing)
            continue
        if plan.name not in measured:
            continue
        result = measured[plan.name]
        for metric, value in result["metrics"].items():
            values.setdefault(plan.arm.name, {}).setdefault(plan.point_label, {}).setdefault(metric, {})[plan.seed] = (
                value
            )
        for name, curve in result.get("curves", {}).items():
            curves.setdefault(plan.arm.name, {}).setdefault(plan.point_label, {}).setdefault(name, {})[plan.seed] = (
                curve
            )
    intervals = {
        arm: {
            point: {m: t_interval(finite) for m, v in metrics.items() if (finite := _finite(v.values()))}
            for point, metrics in points.items()
        }
        for arm, points in values.items()
    }
    claims = [judge(claim, spec, measured, plans) for claim in spec.claims]
    seeds = sorted({p.seed for p in plans})
    return Summary(spec, seeds, list(plans), values, intervals, curves, claims, not_run)
