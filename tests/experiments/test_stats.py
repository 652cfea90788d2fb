"""Mean and 95% t-interval over seeds, and the verdict on a claim from an interval."""

from __future__ import annotations

import math

import pytest

from tttlm.experiments.stats import Interval, t_interval, t_quantile_975
from tttlm.experiments.verdicts import CONTRADICTED, NOT_RESOLVED, REPRODUCED, verdict


@pytest.mark.parametrize(
    ("df", "quantile"),
    # published two-sided 95% critical values of Student's t
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423), (31, 2.0395), (40, 2.0211), (120, 1.9799)],
)
def test_t_quantile_matches_the_tables(df, quantile):
    assert t_quantile_975(df) == pytest.approx(quantile, abs=1e-4)


def test_t_quantile_approaches_the_normal_and_refuses_bad_df():
    assert t_quantile_975(10_000) == pytest.approx(1.960201, abs=1e-5)  # scipy.stats.t.ppf(0.975, 10000)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="degrees of freedom"):
            t_quantile_975(bad)


def test_interval_of_three_values():
    # mean 2, sample std 1: half-width t(0.975, 2) / sqrt(3)
    interval = t_interval([1.0, 2.0, 3.0])
    assert (interval.mean, interval.std, interval.n) == (2.0, 1.0, 3)
    assert interval.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert interval.low == pytest.approx(2 - 2.484138, abs=1e-5)


def test_one_value_has_no_interval_and_bad_values_are_refused():
    single = t_interval([5.0])
    assert single.mean == 5.0
    assert math.isinf(single.low)
    assert math.isinf(single.high)
    assert single.to_json()["low"] is None
    assert single.text() == "5 (1 seed)"
    with pytest.raises(ValueError, match="no values"):
        t_interval([])
    with pytest.raises(ValueError, match="non-finite"):
        t_interval([1.0, math.nan])


def _interval(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 1.0, 3)


@pytest.mark.parametrize(
    ("low", "high", "expect", "threshold", "tolerance", "wanted"),
    [
        (-2.0, -0.5, "<", 0.0, 0.0, REPRODUCED),
        (0.5, 2.0, "<", 0.0, 0.0, CONTRADICTED),
        (-1.0, 1.0, "<", 0.0, 0.0, NOT_RESOLVED),
        (0.5, 2.0, ">", 0.0, 0.0, REPRODUCED),
        (-2.0, -0.5, ">", 0.0, 0.0, CONTRADICTED),
        (1.2, 6.0, ">", 1.0, 0.0, REPRODUCED),  # a ratio above 1
        (0.8, 1.1, ">", 1.0, 0.0, NOT_RESOLVED),
        (-0.02, 0.03, "≈", 0.0, 0.05, REPRODUCED),
        (0.06, 0.2, "≈", 0.0, 0.05, CONTRADICTED),
        (-0.2, -0.06, "≈", 0.0, 0.05, CONTRADICTED),
        (0.01, 0.1, "≈", 0.0, 0.05, NOT_RESOLVED),
    ],
)
def test_verdicts_on_synthetic_intervals(low, high, expect, threshold, tolerance, wanted):
    assert verdict(_interval(low, high), expect, threshold, tolerance) == wanted


def test_an_infinite_interval_resolves_nothing():
    for expect in ("<", ">"):
        assert verdict(t_interval([1.0]), expect) == NOT_RESOLVED


def test_verdict_refuses_a_bad_expectation():
    with pytest.raises(ValueError, match="expect must be one of"):
        verdict(_interval(0, 1), "<=")
    with pytest.raises(ValueError, match="tolerance"):
        verdict(_interval(0, 1), "≈", tolerance=-1)


def _judged(tmp_path, values_a, values_b, **claim):
    """The verdict on a claim over synthetic per-seed metrics of the toy spec's two arms (nothing is trained)."""
    from experiment_testing import base_spec

    from tttlm.experiments.plan import plan_runs
    from tttlm.experiments.results import judge
    from tttlm.experiments.spec import parse_spec

    raw = base_spec()
    raw["claims"][0].update(claim)
    spec = parse_spec(raw, "cpu", tmp_path / "toy.yaml")
    plans = plan_runs(spec, [0, 1, 2], tmp_path)
    measured = {}
    for plan in plans:
        values = values_a if plan.arm.name == "small-b" else values_b
        measured[plan.name] = {"metrics": {"ppl@train": values[plan.seed]}}
    return judge(spec.claims[0], spec, measured, plans)


def test_a_claim_is_judged_on_the_differences_paired_by_seed(tmp_path):
    # each seed: a is 0.8-1.0 below b; the arms' own spreads (1 ppl) are larger than the differences' (0.1)
    result = _judged(tmp_path, [10.0, 11.0, 12.0], [10.9, 12.0, 12.8])
    assert result.per_seed == pytest.approx({0: -0.9, 1: -1.0, 2: -0.8})
    assert result.interval.high < 0
    assert result.verdict == REPRODUCED
    unpaired = t_interval([10.0, 11.0, 12.0]).high > t_interval([10.9, 12.0, 12.8]).low
    assert unpaired  # the two arms' own intervals overlap: without pairing nothing would be resolved


def test_a_claim_is_contradicted_or_not_resolved_by_the_interval(tmp_path):
    assert _judged(tmp_path, [12.0, 13.0, 14.0], [10.0, 11.1, 11.9]).verdict == CONTRADICTED
    assert _judged(tmp_path, [10.0, 12.0, 11.0], [11.0, 11.0, 11.0]).verdict == NOT_RESOLVED


def test_a_ratio_with_a_zero_denominator_drops_that_seed(tmp_path):
    result = _judged(tmp_path, [2.0, 3.0, 4.0], [1.0, 0.0, 1.0], op="ratio", expect=">", threshold=1.0)
    assert result.per_seed == {0: 2.0, 2: 4.0}
    assert result.interval.n == 2


def test_an_arm_that_scores_zero_everywhere_did_not_learn_the_task(tmp_path):
    from tttlm.experiments.verdicts import DID_NOT_LEARN

    # 0 against 0.4: the interval alone would call "a < b" reproduced
    result = _judged(tmp_path, [0.0, 0.0, 0.0], [0.4, 0.5, 0.45])
    assert result.verdict == DID_NOT_LEARN
    assert result.reason == "small-b scored 0 at every point with every seed"
    assert _judged(tmp_path, [0.0, 0.1, 0.0], [0.4, 0.5, 0.45]).verdict == REPRODUCED
