"""Running an experiment: train every planned run through ``tttlm.train.train`` (resumable), evaluate it, keep the
results beside it, then summarise and report.

Resuming is the trainer's: a run with checkpoints continues from the newest (``resume=True``), a run whose final
model is exported and verified (``checkpoint.verify_export``) under the same training config is reused untouched,
and a run's evaluation results (``<run>/experiment-<hash>.json``) are reused while the spec's evaluations for it are
the same. Arms whose training configs are equal (they differ only in ``eval_overrides``) share one trained run. A
run directory that holds another config's run is refused (another ``--out``, or delete it). An arm that needs a
missing feature (``tttlm.experiments.requirements``) is skipped and reported as not run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import PreTrainedModel

from tttlm.experiments.evaluations import TIMINGS, evaluate, training_metrics
from tttlm.experiments.plan import RunPlan, check_data, plan_runs
from tttlm.experiments.spec import Spec

RESULTS_PREFIX = "experiment-"  # <run>/experiment-<hash of the evaluations and eval_overrides>.json
Say = Callable[[str], None]


class ExperimentError(RuntimeError):
    """An experiment cannot go on (a run directory of another config, data too short, a failed run); the message
    says what and how to fix it."""


def _trained_config(plan: RunPlan, data_dir: Path) -> Any:
    from tttlm.train import config_from_dict

    raw = json.loads(json.dumps(plan.config))
    raw.setdefault("data", {})["dir"] = str(data_dir)
    return config_from_dict(raw)


def _is_finished(run_dir: Path) -> bool:
    from tttlm.train.checkpoint import CorruptCheckpointError, verify_export
    from tttlm.train.run_dir import RunDir

    model = RunDir(run_dir).model
    if not model.exists():
        return False
    try:
        verify_export(model)
    except CorruptCheckpointError:
        return False
    return True


def ensure_trained(plan: RunPlan, data_dir: Path, say: Say) -> None:
    """Train ``plan``'s run, continue it from its newest checkpoint, or reuse it when it is finished."""
    from tttlm.train import train
    from tttlm.train.checkpoint import list_checkpoints
    from tttlm.train.config import trajectory_of
    from tttlm.train.run_dir import RunDir

    config = _trained_config(plan, data_dir)
    saved = RunDir(plan.run_dir).config
    if saved.exists():
        old = trajectory_of(yaml.safe_load(saved.read_text()) or {})
        if old != config.trajectory():
            changed = [k for k in old if old[k] != config.trajectory()[k]]
            raise ExperimentError(
                f"{plan.run_dir} holds a run of another config (differs in {', '.join(changed)}); the spec or --data "
                "changed since it was trained: pass another --out, or delete that run directory to train it again"
            )
        if _is_finished(plan.run_dir):
            say(f"  {plan.name}: finished earlier, reused")
            return
    resume = bool(list_checkpoints(plan.run_dir))
    say(f"  {plan.name}: {'continuing' if resume else 'training'} ({config.train.steps} steps)")
    train(config, resume=resume, progress=False)


def load_for_eval(plan: RunPlan) -> PreTrainedModel:
    """The model to evaluate: the run's verified final model with the arm's ``eval_overrides`` applied to its config,
    or, for an arm that is only timed, a fresh model of the planned config initialised from the seed."""
    from tttlm.models import ARCHS, load
    from tttlm.train.checkpoint import verify_export
    from tttlm.train.run_dir import RunDir

    if not plan.arm.train:
        torch.manual_seed(plan.seed)
        return ARCHS[plan.arm.arch].model_class(plan.model_config).float()
    model_dir = RunDir(plan.run_dir).model
    verify_export(model_dir)
    try:
        return load(model_dir, **plan.arm.eval_overrides).float().eval()
    except (RuntimeError, ValueError, TypeError) as error:
        if not plan.arm.eval_overrides:
            raise
        raise ExperimentError(
            f"arm {plan.arm.name!r}: eval_overrides {plan.arm.eval_overrides} cannot be applied to the trained model "
            f"in {model_dir} ({str(error).splitlines()[0]}); only settings that keep every weight's shape can change "
            "at evaluation"
        ) from None


def _fingerprint(spec: Spec, plan: RunPlan) -> str:
    """What a run's cached results depend on besides its training: the evaluations and the eval-time overrides."""
    return json.dumps([[asdict(e) for e in spec.evaluations], plan.arm.eval_overrides], sort_keys=True, default=str)


def measure(spec: Spec, plan: RunPlan, data_dir: Path | None, say: Say) -> dict[str, Any]:
    """Train (or reuse) and evaluate one run; its results, cached in ``<run>/experiment-<hash>.json``."""
    from tttlm.data.io import write_json_atomic

    fingerprint = _fingerprint(spec, plan)
    # one file per evaluation setting: arms sharing a trained run (other eval_overrides) keep their own results
    cache = plan.run_dir / f"{RESULTS_PREFIX}{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}.json"
    if plan.arm.train:
        ensure_trained(plan, data_dir, say)
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("fingerprint") == fingerprint:
            return cached
    say(f"  {plan.name}: evaluating")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(spec.train_config.get("threads") or threads))
    try:
        model = load_for_eval(plan)
        seq_len = (plan.config or spec.train_config).get("data", {}).get("seq_len", 0)
        metrics = training_metrics(plan.run_dir) if plan.arm.train else {}
        curves: dict[str, list[float]] = {}
        for evaluation in spec.evaluations:
            if not plan.arm.train and evaluation.kind not in TIMINGS:
                continue  # an untrained model is only timed
            values, shapes = evaluate(evaluation, model, seq_len=seq_len, data_dir=data_dir, say=say)
            metrics.update(values)
            curves.update(shapes)
    finally:
        torch.set_num_threads(threads)
    result = {"fingerprint": fingerprint, "metrics": metrics, "curves": curves}
    write_json_atomic(cache, result)
    return result


def _train_in_child(plan: RunPlan, data_dir: Path) -> str | None:
    """``ensure_trained`` in a worker process; a stop by signal comes back as its message (it does not pickle)."""
    from tttlm.train import TrainingInterrupted

    try:
        ensure_trained(plan, data_dir, print)
    except TrainingInterrupted as stop:
        return str(stop)
    return None


def train_in_parallel(plans: Sequence[RunPlan], data_dir: Path, jobs: int, say: Say) -> None:
    """Train the runnable runs of ``plans`` in ``jobs`` worker processes (one thread each, as their configs say),
    the runs that start from another run's weights after the others."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from itertools import repeat

    todo = [p for p in plans if p.arm.train and not p.missing]
    waves = [[p for p in todo if p.init_from is None], [p for p in todo if p.init_from is not None]]
    say(f"training {len(todo)} runs in {jobs} processes")
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for wave in waves:
            for stop in pool.map(_train_in_child, wave, repeat(data_dir)):
                if stop:
                    raise ExperimentError(f"{stop}; run the same command again to continue")


def run_experiment(
    spec: Spec,
    seeds: Sequence[int],
    out: Path,
    data_dir: Path | None = None,
    say: Say = print,
    jobs: int = 1,
    arms: Sequence[str] | None = None,
) -> Path:
    """Every run of ``spec`` for ``seeds`` (trained, continued or reused; evaluated), then ``report.md``, the plots
    and ``results.json`` in ``out``; returns the report's path. ``jobs`` > 1 trains that many runs at a time in
    worker processes; the evaluations (and so every timing) run one at a time in this process afterwards. ``arms``:
    only these arms (``plan_runs``)."""
    from tttlm.experiments.report import write_report
    from tttlm.experiments.results import summarise

    plans = plan_runs(spec, seeds, out, arms)
    if spec.trains:
        from tttlm.data.prepare import ensure_prepared

        data_dir = ensure_prepared(data_dir, say=say)
        problems = check_data(spec, plans, data_dir)
        if problems:
            raise ExperimentError("; ".join(problems) + ": prepare a corpus with longer held-out documents")
        if jobs > 1:
            train_in_parallel(plans, data_dir, jobs, say)
    measured: dict[str, dict[str, Any]] = {}
    for i, plan in enumerate(plans, 1):
        say(f"[{i}/{len(plans)}] {plan.name}")
        if plan.missing:
            say("  not run: " + "; ".join(plan.missing))
            continue
        measured[plan.name] = measure(spec, plan, data_dir, say)
    summary = summarise(spec, plans, measured)
    return write_report(spec, summary, out)
