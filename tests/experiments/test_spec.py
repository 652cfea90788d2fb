"""Spec validation: every mistake is refused with a message naming the key and what would be valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiment_testing import base_spec

from tttlm.experiments.plan import plan_runs
from tttlm.experiments.spec import SpecError, at_scale, load_spec, parse_spec
from tttlm.models import make_config


def _parse(raw, scale="cpu"):
    return parse_spec(raw, scale, Path("toy.yaml"))


def test_the_base_spec_is_valid_at_both_scales(tmp_path):
    for scale, steps in (("cpu", 1), ("paper", 10)):
        spec = _parse(base_spec(), scale)
        assert spec.train_config["train"]["steps"] == steps
        assert [a.name for a in spec.arms] == ["small-b", "large-b"]
        assert len(plan_runs(spec, [0, 1], tmp_path)) == 4


def test_per_scale_values_are_resolved_anywhere():
    assert at_scale({"a": [{"cpu": 1, "paper": 2}], "b": {"cpu": {"x": 3}, "paper": {}}}, "cpu") == {
        "a": [1],
        "b": {"x": 3},
    }
    with pytest.raises(SpecError, match="no entry for scale 'paper'"):
        at_scale({"steps": {"cpu": 1}}, "paper")


def _change(path: str, value):
    raw = base_spec()
    *keys, last = path.split("/")
    node = raw
    for key in keys:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("colour", "red", "unknown key"),
        ("arms/0/arch", "gpt-5", "unknown arch 'gpt-5'; choose one of"),
        ("arms/1/name", "small-b", "listed twice"),
        ("arms/0/shape", "round", "unknown key.*shape"),
        ("arms/0/requires", ["time-travel"], "requires must be a list of"),
        ("arms/0/sweep", {"key": "data.seq_len", "values": []}, "non-empty list of distinct"),
        ("arms/1/init_from", {"arm": "nobody"}, "must name an arm listed before it"),
        ("evaluations/0/kind", "vibes", "kind must be one of"),
        ("evaluations/0/contexts", [0, 64], "positive integers"),
        ("evaluations/0/documents_max", 3, "unknown key"),
        ("claims", [], "at least one claim"),
        ("claims/0/a/arm", "nobody", "must be one of the arms"),
        ("claims/0/expect", "<=", "expect must be one of"),
        ("claims/0/op", "sum", "op must be one of"),
        ("claims/0/source", KeyError, "source must be a non-empty string"),
        ("claims/0/a/at", 3, "index into arm 'small-b'"),
        ("claims/0/b/metric", "perplexity@train", "measures 'perplexity@train'; its metrics are loss, ppl"),
    ],
)
def test_invalid_specs_are_refused(path, value, message):
    with pytest.raises(SpecError, match=message):
        _parse(_change(path, value))


def test_claims_about_approximate_equality_need_a_tolerance():
    raw = _change("claims/0/expect", "≈")
    with pytest.raises(SpecError, match="needs a tolerance"):
        _parse(raw)
    raw["claims"][0]["tolerance"] = 0.5
    assert _parse(raw).claims[0].tolerance == 0.5


def test_a_swept_arm_needs_the_point_a_claim_is_about():
    raw = _change("arms/0/sweep", {"key": "data.seq_len", "values": [32, 64], "symbol": "T"})
    with pytest.raises(SpecError, match="say which point with at"):
        _parse(raw)
    raw["claims"][0]["a"]["at"] = -1
    spec = _parse(raw)
    assert spec.arms[0].points == (32, 64)
    assert spec.claims[0].a.at == -1


def test_position_bins_must_lie_within_the_length():
    raw = _change("evaluations", [{"kind": "by_position", "length": 64, "bins": [[1, 32], [33, 65]]}])
    with pytest.raises(SpecError, match=r"\[33, 65\] must be \[first, last\]"):
        _parse(raw)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("arms/0/overrides", {"mini_batch_size": 4, "wings": 2}, "unknown override"),
        ("train_config/train/batch_tokens", 48, "must be a multiple of data.seq_len"),
        ("arms/0/settings", {"optim.lr": -1}, "optim.lr must be > 0"),
    ],
)
def test_configs_the_trainer_or_registry_would_refuse_are_refused_by_the_plan(tmp_path, path, value, message):
    spec = _parse(_change(path, value))
    with pytest.raises(SpecError, match=f"arm 'small-b'.*{message}"):
        plan_runs(spec, [0], tmp_path)


def test_parameter_matching_is_a_setting_of_the_runs_not_of_the_arch(tmp_path):
    raw = base_spec()
    raw["train_config"]["model"]["overrides"] = {}
    raw["arms"] = [
        {"name": "small-b", "arch": "swa"},
        {"name": "large-b", "arch": "swa", "settings": {"model.match_params": "ttt-linear"}},
    ]
    papers, matched = (plan.model_config for plan in plan_runs(_parse(raw), [0], tmp_path))
    assert papers.intermediate_size == make_config("swa", "tiny").intermediate_size  # the preset's width
    solved = make_config("swa", "tiny", match_params="ttt-linear", vocab_size=300).intermediate_size
    assert matched.intermediate_size == solved != papers.intermediate_size
    raw["arms"][1]["settings"] = {"model.match_params": "llama"}
    with pytest.raises(SpecError, match=r"arm 'large-b'.*match_params must be None .* 'ttt-linear'"):
        plan_runs(_parse(raw), [0], tmp_path)


def test_the_window_to_mini_batch_ratio_is_checked(tmp_path):
    raw = base_spec()
    raw["arms"] = [{"name": "e2e", "arch": "ttt-e2e", "overrides": {"sliding_window": 16, "mini_batch_size": 4}}]
    raw["claims"][0]["a"]["arm"] = raw["claims"][0]["b"]["arm"] = "e2e"
    raw["ratios"] = {"window_over_mini_batch": 8}
    with pytest.raises(SpecError, match="k / b = 4; the spec keeps the paper's k / b = 8"):
        plan_runs(_parse(raw), [0], tmp_path)
    raw["arms"][0]["overrides"]["mini_batch_size"] = 2
    assert plan_runs(_parse(raw), [0], tmp_path)


def test_an_unknown_experiment_names_the_shipped_ones():
    with pytest.raises(SpecError, match=r"choose one of .*ttt-minibatch"):
        load_spec("no-such-experiment")


def test_a_timing_clock_is_checked_and_auto_is_the_cpu_time_at_one_thread():
    import torch

    from tttlm.experiments.evaluations import timing_clock
    from tttlm.models import build

    raw = base_spec()
    raw["evaluations"].append({"kind": "forward_time", "contexts": [16], "clock": "sundial"})
    with pytest.raises(SpecError, match="clock must be one of auto, wall, cpu; got 'sundial'"):
        _parse(raw)
    raw["evaluations"][-1].pop("clock")
    assert _parse(raw).evaluations[-1].settings["clock"] == "auto"
    model = build("transformer", "tiny")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert timing_clock("auto", model) == "cpu"
        assert timing_clock("wall", model) == "wall"
        torch.set_num_threads(2)
        assert timing_clock("auto", model) == "wall"
    finally:
        torch.set_num_threads(threads)


def test_a_sweep_sets_its_also_keys_with_each_point(tmp_path):
    also = {"model.overrides.rope_theta": [1e5, 1e6]}
    raw = _change("arms/0/sweep", {"key": "optim.lr", "values": [1e-3, 2e-3], "symbol": "lr", "also": also})
    raw["claims"][0]["a"]["at"] = -1
    spec = _parse(raw)
    configs = [run.config for run in plan_runs(spec, [0], tmp_path) if run.arm.name == "small-b"]
    assert [(c["optim"]["lr"], c["model"]["overrides"]["rope_theta"]) for c in configs] == [(1e-3, 1e5), (2e-3, 1e6)]
    also["model.overrides.rope_theta"] = [1e5]
    with pytest.raises(SpecError, match="one value per point"):
        _parse(raw)


def test_jobs_default_to_the_cores_that_hold_one_run_each(monkeypatch):
    import os

    from tttlm.experiments.plan import default_jobs

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    raw = base_spec()
    raw["train_config"]["threads"] = 1
    assert default_jobs(_parse(raw)) == 4
    raw["train_config"]["threads"] = 2
    assert default_jobs(_parse(raw)) == 2
    raw["train_config"]["threads"] = 0  # PyTorch's own thread pool: one run at a time
    assert default_jobs(_parse(raw)) == 1
    raw["train_config"]["threads"] = 1
    assert default_jobs(_parse(raw, "paper")) == 1
