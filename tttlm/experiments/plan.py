"""From a spec to its runs: one training config per arm × sweep point × seed, validated without training, with the
tokens, FLOPs and time each costs.

``plan_runs(spec, seeds, out)`` builds every run's training config through ``tttlm.train.config_from_dict`` (so a
run the trainer would refuse is refused here), every model config through the registry (``make_config``, on no
device), and checks what the spec asks of them (``check_plan``). Costs: training FLOPs from ``tttlm.bench.flops``
(3 × the forward; ``6 N`` per token where no formula exists, marked approximate), and time at the stated
throughputs: ``GPU_FLOPS`` per GPU at the paper scale, the measured ``CPU_TOKENS_PER_S`` at the cpu scale.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from tttlm.experiments.requirements import missing
from tttlm.experiments.spec import Arm, Spec, SpecError

# the throughput the GPU-hour estimate assumes: 200 TFLOP/s sustained per GPU (an H100/H200 at ~20% of its
# 989 TFLOP/s dense bf16 peak; the TTT layers run well below the matmul peak, see docs/BENCHMARKS.md)
GPU_FLOPS = 200e12
# the CPU time estimate: training tokens/s of the tiny preset on one thread of this 2-core machine while it was
# shared (load average 8-10; measured 2026-12-03 with 4096 tokens per step at T = 512, T = 256 for the TTT-Linear,
# Mamba and TTT-MLP rows; a quiet machine (load ~1) trains 2-3x faster: TTT-Linear 9.3K tokens/s at T = 256).
# TTT-Linear at b = 1: ``MINI_BATCH_1_TOKENS_PER_S``; archs not listed: ``CPU_TOKENS_PER_S_OTHER``.
CPU_TOKENS_PER_S = {
    "ttt-linear": 3700,
    "ttt-mlp": 2000,
    "transformer": 5500,
    "swa": 4700,
    "hybrid": 4800,
    "mamba": 2600,
    "mamba2": 2200,
    "gdn-swa": 2800,
    "ttt-kvb": 2800,
    "ttt-e2e": 880,
}
MINI_BATCH_1_TOKENS_PER_S = 2200
CPU_TOKENS_PER_S_OTHER = 2000


@dataclass(frozen=True)
class RunPlan:
    """One run: arm ``arm`` at sweep point ``point`` (index ``point_index``) with seed ``seed``.

    Attributes:
        run_dir: where it trains (a ``tttlm.train`` run directory) and keeps its evaluations.
        config: its training config as plain data (None for an arm that is only timed).
        model_config: the model it trains (or times), built by the registry at the plan's vocabulary.
        tokens: training tokens.
        flops: training FLOPs; ``flops_exact`` is False when they are the ``6 N`` approximation.
        missing: why the run cannot be done today (features it needs that do not exist); empty when it can.
        init_from: the run whose final weights this one starts from, if any.
    """

    arm: Arm
    point: Any
    point_index: int
    seed: int
    run_dir: Path
    config: dict[str, Any] | None
    model_config: PretrainedConfig
    tokens: int
    flops: float
    flops_exact: bool
    missing: tuple[str, ...]
    init_from: Path | None

    @property
    def point_label(self) -> str:
        return "" if self.arm.sweep is None else f"{self.arm.sweep.symbol}={self.point}"

    @property
    def name(self) -> str:
        point = f"[{self.point_label}]" if self.point_label else ""
        return f"{self.arm.name}{point} seed {self.seed}"


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``dotted`` = ``a.b.c``, creating the sections on the way."""
    *sections, last = dotted.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise SpecError(f"{dotted}: {section} is not a section of the training config")
    node[last] = value


def run_dir_of(out: Path, arm: Arm, point: Any, seed: int) -> Path:
    """``<out>/runs/<arm>[/<symbol>-<value>]/seed-<seed>``."""
    parts = [arm.name] + ([f"{arm.sweep.symbol}-{point}"] if arm.sweep else []) + [f"seed-{seed}"]
    return Path(out, "runs", *parts)


def training_config(
    spec: Spec, arm: Arm, point: Any, seed: int, run_dir: Path, init_from: Path | None = None
) -> dict[str, Any]:
    """The training config of one run as plain data: the spec's base, the arm's arch, overrides and settings, the
    sweep point, the seed, the run directory and the run whose final weights it starts from."""
    raw = copy.deepcopy(spec.train_config)
    raw.setdefault("model", {})
    raw["model"]["arch"] = arm.arch
    raw["model"]["overrides"] = {**(raw["model"].get("overrides") or {}), **arm.overrides}
    for key, value in arm.settings.items():
        set_key(raw, key, value)
    if arm.sweep:
        for key, value in arm.sweep.settings(arm.sweep.values.index(point)).items():
            set_key(raw, key, value)
    raw.update(name=f"{spec.name}-{run_dir.parent.name}-{run_dir.name}", seed=seed, out_dir=str(run_dir))
    if init_from is not None:
        raw["model"]["init_from"] = str(init_from)  # the trainer's two-stage start (tttlm.train.init_from)
    return raw


def _model_config(spec: Spec, raw: dict[str, Any], where: str) -> PretrainedConfig:
    from tttlm.models import make_config

    model = raw.get("model") or {}
    overrides = {"vocab_size": spec.vocab_size, **(model.get("overrides") or {})}
    try:
        return make_config(
            model["arch"], model.get("size", "tiny"), match_params=model.get("match_params"), **overrides
        )
    except (ValueError, TypeError) as error:
        raise SpecError(f"{where}: the model config is invalid: {error}") from None


def _training_flops(config: PretrainedConfig, seq_len: int, tokens: int) -> tuple[float, bool]:
    from tttlm.bench.flops import has_flop_formula, train_flops_per_token
    from tttlm.models.registry import count_parameters

    if has_flop_formula(config):
        return train_flops_per_token(config, seq_len) * tokens, True
    return 6.0 * count_parameters(config) * tokens, False


def plan_runs(spec: Spec, seeds: Sequence[int], out: Path, arms: Sequence[str] | None = None) -> list[RunPlan]:
    """Every run of ``spec`` for ``seeds``, seed by seed (so a partial run has every arm of the first seeds), each
    validated; ``SpecError`` for the first config that the trainer or the registry would refuse. ``arms``: only
    these arms are run (by name; None: all), the others are planned as not run, so their claims say so."""
    from tttlm.train.config import ConfigError, accumulation_steps, config_from_dict

    left_out = _left_out(spec, arms)
    plans: list[RunPlan] = []
    where_trained: dict[tuple[str, int, int], Path] = {}  # (arm, point index, seed) -> its run directory
    by_config: dict[str, tuple[Path, dict[str, Any]]] = {}  # one run per distinct training config
    for seed in seeds:
        for arm in spec.arms:
            gaps = tuple(filter(None, (missing(r) for r in arm.requires))) + left_out.get(arm.name, ())
            for index, point in enumerate(arm.points):
                run_dir = run_dir_of(out, arm, point, seed)
                source = None
                if arm.init_from:
                    parent = spec.arm(arm.init_from[0])
                    source = where_trained[(parent.name, arm.init_from[1] % len(parent.points), seed)]
                raw = training_config(spec, arm, point, seed, run_dir, source)
                if arm.train:  # arms that differ only at evaluation (eval_overrides) share one trained run
                    same = json.dumps({k: v for k, v in raw.items() if k not in ("name", "out_dir")}, sort_keys=True)
                    run_dir, raw = by_config.setdefault(same, (run_dir, raw))
                where_trained[(arm.name, index, seed)] = run_dir
                where = f"{spec.name}: arm {arm.name!r}" + (f" at {arm.sweep.symbol}={point}" if arm.sweep else "")
                try:
                    config = config_from_dict(raw)
                    if arm.train:
                        accumulation_steps(config, spec.gpus)
                except ConfigError as error:
                    raise SpecError(f"{where}: {error}") from None
                model_config = _model_config(spec, raw, where)
                tokens = config.train.steps * config.train.batch_tokens if arm.train else 0
                flops, exact = _training_flops(model_config, config.data.seq_len, tokens)
                plans.append(
                    RunPlan(arm, point, index, seed, run_dir, raw if arm.train else None, model_config, tokens,
                            flops, exact, gaps, source)
                )  # fmt: skip
    check_plan(spec, plans)
    return plans


def _left_out(spec: Spec, arms: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """Arm name -> why it is not run, for the arms that ``arms`` leaves out (``SpecError`` for an unknown name or a
    chosen arm that starts from a left-out one's weights)."""
    if arms is None:
        return {}
    names = [a.name for a in spec.arms]
    unknown = [a for a in arms if a not in names]
    if unknown or not arms:
        raise SpecError(f"{spec.name} has no arm {', '.join(map(repr, unknown)) or '(none chosen)'}; its arms: "
                        f"{', '.join(names)}")  # fmt: skip
    for arm in spec.arms:
        if arm.name in arms and arm.init_from and arm.init_from[0] not in arms:
            raise SpecError(f"arm {arm.name!r} starts from the weights of arm {arm.init_from[0]!r}: choose it too")
    why = f"left out of this run (--arms {','.join(arms)}); run without --arms, or name it, to include it"
    return {name: (why,) for name in names if name not in arms}


def _eval_lengths(spec: Spec, seq_len: int) -> list[int]:
    """The longest document length each evaluation needs for a model trained on ``seq_len`` tokens."""
    lengths = []
    for evaluation in spec.evaluations:
        settings = evaluation.settings
        if evaluation.kind == "ppl":
            contexts = settings["contexts"]
            lengths += [seq_len] if contexts == "train" else list(contexts)
        elif evaluation.kind == "by_position":
            lengths.append(settings["length"])
    return lengths


def window_of(config: PretrainedConfig) -> int | None:
    """The attention window of a model config, None when it has no sliding-window attention (a stack config
    carries a ``sliding_window`` whether or not any of its layers uses it)."""
    mixers = getattr(config, "layer_mixers", None)
    if mixers is not None and not any("sliding_attention" in layer for layer in mixers):
        return None
    return getattr(config, "sliding_window", None)


def check_plan(spec: Spec, plans: Sequence[RunPlan]) -> None:
    """What the spec asks of its runs: the window-to-mini-batch ratio of every TTT-E2E arm (``ratios``), and the
    by-position length reaching past the window the claims compare across (``ratios.context_over_window``)."""
    want = spec.ratios.get("window_over_mini_batch")
    span = spec.ratios.get("context_over_window")
    for plan in plans:
        config = plan.model_config
        window = window_of(config)
        mini_batch = getattr(config, "mini_batch_size", None)
        if want is not None and window and mini_batch and window != want * mini_batch:
            raise SpecError(
                f"{spec.name}: arm {plan.arm.name!r} has window k = {window} and mini-batch b = {mini_batch}, so "
                f"k / b = {window / mini_batch:g}; the spec keeps the paper's k / b = {want} "
                "(ratios.window_over_mini_batch)"
            )
        if span is not None and window:
            seq_len = (plan.config or spec.train_config).get("data", {}).get("seq_len", 0)
            longest = max([seq_len, *_eval_lengths(spec, seq_len)])
            if not span[0] * window <= longest <= span[1] * window:
                raise SpecError(
                    f"{spec.name}: arm {plan.arm.name!r} (window {window}) is trained/evaluated up to {longest} "
                    f"tokens = {longest / window:g}× its window; the spec asks for {span[0]}–{span[1]}× "
                    "(ratios.context_over_window)"
                )


def check_data(spec: Spec, plans: Sequence[RunPlan], data_dir: Path) -> list[str]:
    """Problems of the prepared data for these runs (an empty list when there are none): the held-out documents
    must be as long as the longest context any evaluation asks for."""
    from tttlm.data.packing import PackedDataset
    from tttlm.eval.perplexity import longest_document

    longest = longest_document(PackedDataset(data_dir, "val"))
    problems = []
    for plan in plans:
        if plan.config is None:
            continue
        need = max(_eval_lengths(spec, plan.config["data"]["seq_len"]), default=0)
        if need > longest:
            problems.append(
                f"{plan.name}: an evaluation needs held-out documents of {need} tokens; the longest in {data_dir} "
                f"has {longest}"
            )
    return sorted(set(problems))


def cpu_seconds(plan: RunPlan) -> float:
    """Training time of one run at the measured CPU throughput of its arch (``CPU_TOKENS_PER_S``)."""
    rate = CPU_TOKENS_PER_S.get(plan.arm.arch, CPU_TOKENS_PER_S_OTHER)
    if getattr(plan.model_config, "mini_batch_size", None) == 1 and plan.arm.arch == "ttt-linear":
        rate = MINI_BATCH_1_TOKENS_PER_S
    return plan.tokens / rate


def default_jobs(spec: Spec) -> int:
    """Runs to train at a time: as many as the cores this process may use hold runs of ``train_config.threads``
    each (independent runs of one thread each are the cheapest way to fill the cores with tiny models); 1 where the
    threads are left to PyTorch (0), and at the paper scale (torchrun places its own processes)."""
    threads = spec.train_config.get("threads") or 0
    if spec.scale != "cpu" or threads < 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // threads)


def plan_text(spec: Spec, plans: Sequence[RunPlan], seeds: Sequence[int], jobs: int = 1) -> str:
    """The plan as printed by ``--dry-run``: one line per arm (runs, tokens, FLOPs, what is missing) and the totals
    with the time they take at ``GPU_FLOPS`` per GPU (paper scale) or at ``CPU_TOKENS_PER_S`` (cpu scale)."""
    lines = [f"{spec.name} ({spec.title}) at scale {spec.scale}: {len(plans)} runs, seeds {list(seeds)}"]
    for arm in spec.arms:
        mine = [p for p in plans if p.arm is arm]
        tokens, flops = sum(p.tokens for p in mine), sum(p.flops for p in mine)
        points = f", {arm.sweep.symbol} ∈ {list(arm.sweep.values)}" if arm.sweep else ""
        approx = "" if all(p.flops_exact for p in mine) else " (≈ 6N per token: no FLOP formula for this arch)"
        what = f"{tokens:,} tokens, {flops:.3g} FLOPs{approx}" if arm.train else "timed only (not trained)"
        size = (mine[0].config or spec.train_config).get("model", {}).get("size", "tiny")
        lines.append(f"  {arm.name}: {arm.arch} {size}{points}: {len(mine)} runs, {what}")
        if mine and mine[0].missing:
            lines += [f"    NOT RUN: {gap}" for gap in mine[0].missing]
        if arm.init_from:
            lines.append(f"    starts from the final weights of {arm.init_from[0]} (point {arm.init_from[1]})")
        shared = sorted({p.run_dir.parts[-2 - bool(arm.sweep)] for p in mine if arm.name not in p.run_dir.parts})
        if arm.train and shared:
            lines.append(f"    trained once with {', '.join(shared)} (the same training config; other eval_overrides)")
    unique = list({p.run_dir: p for p in plans}.values())  # a run shared by arms is trained (and counted) once
    tokens, flops = sum(p.tokens for p in unique), sum(p.flops for p in unique)
    if spec.scale == "paper":
        hours = flops / GPU_FLOPS / 3600
        cost = f"{hours:,.1f} GPU-hours ({hours / spec.gpus:,.1f} h on {spec.gpus} GPUs)"
        cost += f" at {GPU_FLOPS / 1e12:.0f} TFLOP/s per GPU"
    else:
        minutes = sum(cpu_seconds(p) for p in unique if not p.missing) / 60
        cost = f"≈ {minutes:,.0f} CPU-minutes for the runnable runs, ≈ {minutes / jobs:,.0f} min with --jobs {jobs} "
        cost += "(one thread per run, at the tokens/s measured on this machine while shared: plan.CPU_TOKENS_PER_S)"
    lines.append(f"total: {tokens:,} training tokens, {flops:.3g} FLOPs; {cost} (evaluations not included)")
    return "\n".join(lines)
