"""Running an experiment: every arm × seed trained and evaluated, a killed experiment resumes and reuses what was
finished, an arm that needs a missing feature is reported as not run, the report and results are written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from experiment_testing import TINY_MODEL, base_spec, write_spec

import tttlm.train
from tttlm.experiments import requirements
from tttlm.experiments.overview import claims_table
from tttlm.experiments.run import ExperimentError, run_experiment
from tttlm.experiments.spec import load_spec
from tttlm.experiments.verdicts import NOT_RUN, REPRODUCED
from tttlm.train import TrainingInterrupted


class Recorder:
    """Wraps ``tttlm.train.train``: records each call's run directory and resume flag; can stop at call N."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.stop_at = stop_at
        self.real = tttlm.train.train

    def __call__(self, config, **kwargs):
        self.calls.append((str(config.run_dir), kwargs.get("resume", False)))
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise TrainingInterrupted(config.run_dir, 0, 15)  # as if killed before its first checkpoint
        return self.real(config, **kwargs)


def _quiet(message: str) -> None:
    del message


def test_a_killed_experiment_resumes_and_reuses_finished_runs(tmp_path, data_dir, monkeypatch):
    spec = load_spec(write_spec(tmp_path / "toy.yaml", base_spec()))
    out = tmp_path / "out"
    first = Recorder(stop_at=2)
    monkeypatch.setattr(tttlm.train, "train", first)
    with pytest.raises(TrainingInterrupted):
        run_experiment(spec, [0], out, data_dir=data_dir, say=_quiet)
    assert [c[0].split("/runs/")[1] for c in first.calls] == ["small-b/seed-0", "large-b/seed-0"]
    assert not (out / "report.md").exists()

    again = Recorder()
    monkeypatch.setattr(tttlm.train, "train", again)
    report = run_experiment(spec, [0], out, data_dir=data_dir, say=_quiet)
    assert [c[0].split("/runs/")[1] for c in again.calls] == ["large-b/seed-0"]  # small-b was reused
    assert list((out / "runs/small-b/seed-0").glob("experiment-*.json"))
    assert report.exists()

    # an unfinished run (checkpoint but no final model) is continued with the trainer's resume
    shutil.rmtree(out / "runs/large-b/seed-0/model")
    third = Recorder()
    monkeypatch.setattr(tttlm.train, "train", third)
    run_experiment(spec, [0], out, data_dir=data_dir, say=_quiet)
    assert third.calls == [(str(out / "runs/large-b/seed-0"), True)]


def test_report_results_and_verdicts_over_seeds(tmp_path, data_dir):
    raw = base_spec()
    # a claim that must hold by construction: one arm's value minus itself is 0, so it is ≈ 0 with any tolerance
    raw["claims"].append(
        {
            "id": "self",
            "source": "none",
            "claim": "an arm equals itself",
            "a": {"arm": "small-b", "metric": "ppl@train"},
            "b": {"arm": "small-b", "metric": "ppl@train"},
            "expect": "≈",
            "tolerance": 1e-9,
        }
    )
    spec = load_spec(write_spec(tmp_path / "toy.yaml", raw))
    report = run_experiment(spec, [0, 1, 2], tmp_path / "out", data_dir=data_dir, say=_quiet)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    ppl = results["values"]["small-b"][""]["ppl@train"]
    assert sorted(ppl) == ["0", "1", "2"]
    assert len(set(ppl.values())) == 3
    claims = {c["id"]: c for c in results["claims"]}
    assert claims["self"]["verdict"] == REPRODUCED
    assert claims["self"]["interval"]["n"] == 3
    per_seed = claims["smaller-b-better"]["per_seed"]
    small, large = results["values"]["small-b"][""]["ppl@train"], results["values"]["large-b"][""]["ppl@train"]
    assert per_seed == pytest.approx({s: small[s] - large[s] for s in small})  # paired by seed
    text = report.read_text()
    assert "| an arm equals itself |" in text
    assert "**reproduced**" in text
    assert (tmp_path / "out" / "ppl.png").stat().st_size > 1000
    # the overview of all reports: one row per claim, with the quantity naming the sweep points it compares
    (tmp_path / "out" / "runs" / "results.json").write_text("{}")  # another tool's JSON is not a report
    rows = claims_table(tmp_path).splitlines()[2:]
    assert len(rows) == len(results["claims"]) == 2
    assert rows[1].startswith("| [toy](out/report.md) | an arm equals itself | none |")
    assert "| **reproduced** |" in rows[1]
    assert "ppl@train(small-b) − ppl@train(large-b) < 0" in rows[0]
    assert claims_table(tmp_path / "out" / "runs") == ""


def test_an_arm_needing_a_missing_feature_is_not_run(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(requirements.REQUIREMENTS, "needle-data", lambda: "no needles (test)")
    raw = base_spec()
    raw["arms"][1]["requires"] = ["needle-data"]
    spec = load_spec(write_spec(tmp_path / "toy.yaml", raw))
    report = run_experiment(spec, [0], tmp_path / "out", data_dir=data_dir, say=_quiet)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["claims"][0]["verdict"] == NOT_RUN
    assert "no needles (test)" in results["claims"][0]["reason"]
    assert results["not_run"] == {"large-b": ["no needles (test)"]}
    assert not (tmp_path / "out/runs/large-b").exists()
    assert "## Not run" in report.read_text()


def test_arms_chooses_the_arms_that_run_and_a_full_run_reuses_them(tmp_path, data_dir, monkeypatch):
    spec = load_spec(write_spec(tmp_path / "toy.yaml", base_spec()))
    out = tmp_path / "out"
    run_experiment(spec, [0], out, data_dir=data_dir, say=_quiet, arms=["small-b"])
    results = json.loads((out / "results.json").read_text())
    assert results["claims"][0]["verdict"] == NOT_RUN
    assert "--arms small-b" in results["claims"][0]["reason"]
    assert list(results["not_run"]) == ["large-b"]
    assert not (out / "runs/large-b").exists()
    recorder = Recorder()
    monkeypatch.setattr(tttlm.train, "train", recorder)
    run_experiment(spec, [0], out, data_dir=data_dir, say=_quiet)
    assert recorder.calls == [(str(out / "runs/large-b/seed-0"), False)]  # small-b's finished run is reused
    assert json.loads((out / "results.json").read_text())["not_run"] == {}


@pytest.mark.parametrize(("arms", "message"), [(["nope"], "has no arm 'nope'"), (["finetune"], "choose it too")])
def test_arms_refuses_unknown_arms_and_a_missing_parent(tmp_path, arms, message):
    from tttlm.experiments.plan import plan_runs
    from tttlm.experiments.spec import SpecError

    raw = base_spec()
    raw["arms"].append({"name": "finetune", "arch": "ttt-linear", "init_from": {"arm": "small-b"}})
    with pytest.raises(SpecError, match=message):
        plan_runs(load_spec(write_spec(tmp_path / "toy.yaml", raw)), [0], tmp_path / "out", arms)


def test_a_changed_spec_does_not_reuse_a_run_of_the_old_one(tmp_path, data_dir):
    raw = base_spec()
    out = tmp_path / "out"
    run_experiment(load_spec(write_spec(tmp_path / "toy.yaml", raw)), [0], out, data_dir=data_dir, say=_quiet)
    raw["train_config"]["optim"]["lr"] = 2e-3
    with pytest.raises(ExperimentError, match=r"holds a run of another config .*optim"):
        run_experiment(load_spec(write_spec(tmp_path / "toy.yaml", raw)), [0], out, data_dir=data_dir, say=_quiet)


def test_parallel_training_gives_the_runs_of_sequential_training(tmp_path, data_dir):
    spec = load_spec(write_spec(tmp_path / "toy.yaml", base_spec()))
    run_experiment(spec, [0], tmp_path / "one", data_dir=data_dir, say=_quiet)
    run_experiment(spec, [0], tmp_path / "two", data_dir=data_dir, say=_quiet, jobs=2)
    one, two = (json.loads((tmp_path / d / "results.json").read_text())["values"] for d in ("one", "two"))
    for arm in ("small-b", "large-b"):
        assert two[arm][""]["ppl@train"] == one[arm][""]["ppl@train"]  # same seed, same data: the same model


def test_an_arm_starts_from_another_arms_final_weights(tmp_path, data_dir):
    raw = base_spec()
    raw["arms"].append(
        {"name": "finetune", "arch": "ttt-linear", "overrides": {"mini_batch_size": 4}, "init_from": {"arm": "small-b"}}
    )
    out = tmp_path / "out"
    run_experiment(load_spec(write_spec(tmp_path / "toy.yaml", raw)), [0], out, data_dir=data_dir, say=_quiet)
    saved = yaml.safe_load((out / "runs/finetune/seed-0/config.yaml").read_text())
    assert saved["model"]["init_from"] == str(out / "runs/small-b/seed-0")
    values = json.loads((out / "results.json").read_text())["values"]
    assert values["finetune"][""]["ppl@train"] != values["small-b"][""]["ppl@train"]  # one more step of training


def test_timed_arms_and_loss_by_position_against_a_reference(tmp_path, data_dir, monkeypatch):
    from tttlm.experiments import plots

    drawn = {}
    draw = plots._draw

    def recording_draw(lines, path, **kwargs):
        drawn[Path(path).name] = [line.label for line in lines]
        return draw(lines, path, **kwargs)

    monkeypatch.setattr(plots, "_draw", recording_draw)
    raw = base_spec()
    raw["arms"].append({"name": "timed", "arch": "transformer", "overrides": dict(TINY_MODEL), "train": False})
    raw["evaluations"] = [
        {"kind": "by_position", "length": 64, "bins": [[1, 16], [17, 64]], "documents": 2, "reference": "large-b"},
        {"kind": "forward_time", "contexts": [16, 64], "repeats": 1},
    ]
    raw["claims"][0]["a"]["metric"] = raw["claims"][0]["b"]["metric"] = "loss@last"
    raw["claims"].append(
        {
            "id": "grows",
            "source": "none",
            "claim": "timing is positive",
            "a": {"arm": "timed", "metric": "forward_ms@last"},
            "expect": ">",
        }
    )
    out = tmp_path / "out"
    run_experiment(load_spec(write_spec(tmp_path / "toy.yaml", raw)), [0, 1], out, data_dir=data_dir, say=_quiet)
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["values"]["timed"][""]) == ["forward_ms@16", "forward_ms@64"]  # untrained: no val_loss
    assert not (out / "runs/timed/seed-0/model").exists()
    assert set(results["values"]["small-b"][""]) >= {"loss@1-16", "loss@17-64", "forward_ms@64", "val_loss"}
    assert results["claims"][1]["interval"]["n"] == 2
    assert results["claims"][1]["per_seed"]["0"] > 0
    for figure in ("by_position.png", "forward_ms.png", "loss.png"):
        assert (out / figure).stat().st_size > 1000
    assert drawn["by_position.png"] == ["small-b", "large-b"]  # every trained arm, the reference as its 0 line


def test_arms_that_differ_only_at_evaluation_share_one_trained_run(tmp_path, data_dir, monkeypatch):
    raw = base_spec()
    raw["arms"][1] = {"name": "eval-lr", "arch": "ttt-linear", "overrides": {"mini_batch_size": 4},
                      "eval_overrides": {"ttt_base_lr": 0.2}}  # fmt: skip
    raw["claims"][0]["b"]["arm"] = "eval-lr"
    calls = Recorder()
    monkeypatch.setattr(tttlm.train, "train", calls)
    run_experiment(load_spec(write_spec(tmp_path / "toy.yaml", raw)), [0], tmp_path / "out", data_dir=data_dir,
                   say=_quiet)  # fmt: skip
    assert [c[0].split("/runs/")[1] for c in calls.calls] == ["small-b/seed-0"]
    values = json.loads((tmp_path / "out/results.json").read_text())["values"]
    assert values["eval-lr"][""]["ppl@train"] != values["small-b"][""]["ppl@train"]  # evaluated with another inner lr
    assert len(list((tmp_path / "out/runs/small-b/seed-0").glob("experiment-*.json"))) == 2


def test_eval_overrides_that_change_the_weights_are_refused_clearly(tmp_path, data_dir):
    raw = base_spec()
    raw["arms"][1]["eval_overrides"] = {"mini_batch_size": 8}  # TTT-Linear's per-position offsets have b entries
    with pytest.raises(ExperimentError, match=r"arm 'large-b': eval_overrides .* keep every weight's shape"):
        run_experiment(load_spec(write_spec(tmp_path / "toy.yaml", raw)), [0], tmp_path / "out", data_dir=data_dir,
                       say=_quiet)  # fmt: skip
