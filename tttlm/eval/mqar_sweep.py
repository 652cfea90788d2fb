"""The MQAR benchmark over registry archs: one model per (arch, width, pairs, lr, seed), all built by
``tttlm.models.registry.build`` with the same overrides, trained and scored by ``tttlm.eval.mqar``.

Every run appends one JSON line to ``runs.jsonl`` (a sweep that is started again skips the runs already there).
The summary keeps, per (arch, width, pairs), the learning rate whose mean test accuracy over seeds is highest
(Zoology reports the best lr of its sweep), with the mean and its 95% Student-t interval over seeds, and the
state bytes the model carries at the end of a sequence (``mqar.state_bytes``).

Model recipe (Zoology's MQAR models where our blocks allow it): 2 blocks (the Mamba archs: 2 mixer layers per
block, as the registry builds them), ``num_heads`` heads, a short causal conv before every mixer (``short_conv``;
Zoology's recipe gives every mixer one), windowed archs with ``window`` tokens. Our blocks keep their SwiGLU MLP,
``mlp_ratio`` × width wide (Zoology's MQAR models have none).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tttlm.eval.mqar import MqarTask, TrainSettings, make_examples, state_bytes, train
from tttlm.experiments.stats import t_interval
from tttlm.models.registry import build, make_config

WINDOWED = ("swa", "hybrid", "ttt-kvb", "ttt-e2e")
NO_MLP_WIDTH = ("mamba", "mamba2")  # no MLP; Mamba's intermediate_size is its mixer width, left to the registry
NO_HEADS = ("mamba", "mamba2")
TEST_SEED = 2**31 - 1  # the held-out examples: one fixed set for every run, a seed no training set uses


@dataclass(frozen=True)
class ModelRecipe:
    """The dims every arch of a sweep shares."""

    num_layers: int = 2
    num_heads: int = 2
    mlp_ratio: int = 2
    window: int = 16
    short_conv: bool = True


@dataclass(frozen=True)
class RunSpec:
    arch: str
    d_model: int
    num_pairs: int
    lr: float
    seed: int

    def key(self) -> tuple:
        return (self.arch, self.d_model, self.num_pairs, self.lr, self.seed)


def overrides(arch: str, d_model: int, vocab_size: int, recipe: ModelRecipe) -> dict[str, Any]:
    """The ``registry.build`` overrides of ``arch`` at width ``d_model``."""
    values: dict[str, Any] = {"vocab_size": vocab_size, "hidden_size": d_model, "num_hidden_layers": recipe.num_layers}
    if arch not in NO_HEADS:
        values["num_attention_heads"] = recipe.num_heads
    if arch not in NO_MLP_WIDTH:
        values["intermediate_size"] = recipe.mlp_ratio * d_model
    if arch in WINDOWED:
        values["sliding_window"] = recipe.window
    if recipe.short_conv:
        values["short_conv"] = True
    return values


def check_archs(archs: Iterable[str], d_models: Iterable[int], vocab_size: int, recipe: ModelRecipe) -> None:
    """Raise ValueError naming the first (arch, width) the registry refuses, before any training starts."""
    for arch in archs:
        for d in d_models:
            make_config(arch, "tiny", match_params=False, **overrides(arch, d, vocab_size, recipe))


def run_one(
    spec: RunSpec,
    task: MqarTask,
    settings: TrainSettings,
    recipe: ModelRecipe,
    num_train: int,
    num_test: int,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train one model on ``device`` and return its record (the spec, the test metrics, parameters, state bytes,
    seconds)."""
    train_data = make_examples(task, num_train, seed=spec.seed)
    test_data = make_examples(task, num_test, seed=TEST_SEED)
    torch.manual_seed(spec.seed)
    model = build(spec.arch, "tiny", match_params=False, **overrides(spec.arch, spec.d_model, task.vocab_size, recipe))
    model.to(device)
    start = time.perf_counter()
    try:
        metrics: dict[str, Any] = train(
            model, train_data, test_data, settings, window=recipe.window, seed=spec.seed, progress=progress
        )
    except FloatingPointError as error:  # a diverged lr is a result of the sweep (accuracy 0), not a crash
        metrics = {"accuracy": 0.0, "diverged": str(error)}
    return {
        **asdict(spec),
        **metrics,
        "seconds": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_bytes": state_bytes(model, task.seq_len),
        "seq_len": task.seq_len,
        "vocab_size": task.vocab_size,
    }


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sweep(
    specs: Sequence[RunSpec],
    out: Path,
    run: Callable[[RunSpec], dict[str, Any]],
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every spec not yet in ``out/runs.jsonl`` (appending each record as it finishes); returns all records."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    done = {RunSpec(r["arch"], r["d_model"], r["num_pairs"], r["lr"], r["seed"]).key() for r in read_runs(path)}
    for i, spec in enumerate(specs):
        if spec.key() in done:
            continue
        record = run(spec)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if progress:
            progress(f"[{i + 1}/{len(specs)}] {spec}: accuracy {record['accuracy']:.3f} in {record['seconds']:.0f} s")
    return read_runs(path)


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (arch, d_model, num_pairs): the best lr by mean test accuracy over the seeds every lr was run with, and
    that lr's mean and 95% interval over all its seeds of the accuracy (overall, within and beyond the window),
    each seed's accuracy, the state bytes, the parameters and each lr's mean on the shared seeds."""
    groups: dict[tuple, dict[float, dict[int, dict[str, Any]]]] = {}
    for r in records:
        groups.setdefault((r["arch"], r["d_model"], r["num_pairs"]), {}).setdefault(r["lr"], {})[r["seed"]] = r
    rows = []
    for (arch, d, pairs), by_lr in sorted(groups.items()):
        shared = set.intersection(*(set(runs) for runs in by_lr.values()))
        means = {lr: float(np.mean([runs[s]["accuracy"] for s in shared])) for lr, runs in by_lr.items()}
        best = max(means, key=lambda lr: (means[lr], -lr))
        runs = [by_lr[best][s] for s in sorted(by_lr[best])]
        row: dict[str, Any] = {"arch": arch, "d_model": d, "num_pairs": pairs, "lr": best, "seeds": len(runs)}
        for field in ("accuracy", "accuracy_within", "accuracy_beyond"):
            values = [r[field] for r in runs if field in r and not math.isnan(r[field])]
            row[field] = t_interval(values).to_json() if values else None
        row["seed_accuracies"] = [r["accuracy"] for r in runs]
        row["state_bytes"] = runs[0]["state_bytes"]
        row["parameters"] = runs[0]["parameters"]
        row["lr_means"] = {str(lr): m for lr, m in sorted(means.items())}
        rows.append(row)
    return rows
