"""The experiment report's figures: each line a mean over seeds with its 95% t-interval as a band, one colour per
arch (``tttlm.palette``), the legend in the order of the lines' right ends (top to bottom), axes with units.

``metric_figure`` plots one metric (``ppl``, ``forward_ms``, ...) of every arm: against its points (context lengths,
token bins) when it has several, else against the arm's sweep values (one panel per swept setting, sharing the y
axis), else as one point per arm with its interval as an error bar. ``curve_figure`` plots a per-token curve (loss
by token index) on a log-x axis, optionally as the difference from a reference arm per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tttlm.experiments.spec import split_metric
from tttlm.experiments.stats import t_quantile_975
from tttlm.palette import colour, line_style

UNITS = {
    "ppl": "perplexity",
    "loss": "loss (nats / token)",
    "val_loss": "validation loss (nats / token)",
    "forward_ms": "forward time per token (ms)",
    "train_ms": "training time per token (ms)",
    "tokens_per_s": "training throughput (tokens / s)",
}


# axis labels of the settings the shipped specs sweep, by the last part of the config key
SWEEP_UNITS = {
    "seq_len": "training context {} (tokens)",
    "sliding_window": "attention window {} (tokens)",
    "mini_batch_size": "inner mini-batch size {} (tokens)",
    "updated_fraction": "{} of the blocks updated at test time",
}


def sweep_label(key: str, symbol: str) -> str:
    """The axis label of a sweep over config ``key`` with ``symbol``: its unit when known, else ``symbol (key)``."""
    template = SWEEP_UNITS.get(key.rpartition(".")[2])
    return template.format(symbol) if template else f"{symbol} ({key})"


@dataclass
class Line:
    """One line: ``label``, the ``arch`` it is coloured by, x values, and the mean and interval at each."""

    label: str
    arch: str
    xs: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    panel: str | None = None  # the x axis it is drawn against, when a figure has several (None: the figure's)


def unit_of(metric: str) -> str:
    """The axis label of a metric's base name (``niah-*``: accuracy)."""
    return "accuracy" if metric.startswith("niah-") else UNITS.get(metric, metric)


def point_value(point: str) -> float | None:
    """A metric point as a number on an axis: a context ``4096`` -> 4096, a bin ``257-1024`` -> 1024 (its last
    token); None for ``train`` and other names."""
    last = point.rpartition("-")[2]
    return float(last) if last.isdigit() else None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(lines: Sequence[Line], path: Path, *, title: str, xlabel: str, ylabel: str, logx: bool) -> Path:
    """The lines on log-x axes, one panel per x axis (a line's ``panel``, else ``xlabel``) sharing the y axis."""
    plt = _pyplot()
    panels = list(dict.fromkeys(line.panel or xlabel for line in lines))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 if len(panels) == 1 else 4.6 * len(panels), 4.4),
                             sharey=True, squeeze=False)  # fmt: skip
    for ax, panel in zip(axes[0], panels, strict=True):
        _draw_panel(ax, [line for line in lines if (line.panel or xlabel) == panel], xlabel=panel, logx=logx)
    axes[0][0].set_ylabel(ylabel)
    if len(panels) == 1:
        axes[0][0].set_title(title)
    else:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _draw_panel(ax: Any, lines: Sequence[Line], *, xlabel: str, logx: bool) -> None:
    order = sorted(lines, key=lambda line: -line.mean[-1] if line.mean else 0.0)  # legend = top-to-bottom line ends
    seen: dict[str, int] = {}
    for line in order:
        style = line_style(seen.get(line.arch, 0))
        seen[line.arch] = seen.get(line.arch, 0) + 1
        finite = [i for i in range(len(line.xs)) if np.isfinite(line.low[i]) and np.isfinite(line.high[i])]
        ax.plot(line.xs, line.mean, style, marker="o" if len(line.xs) < 40 else None, markersize=4,
                color=colour(line.arch), label=line.label)  # fmt: skip
        if finite:
            xs, low, high = ([values[i] for i in finite] for values in (line.xs, line.low, line.high))
            ax.fill_between(xs, low, high, color=colour(line.arch), alpha=0.2, linewidth=0)
    if logx:
        ax.set_xscale("log", base=2)
        ticks = sorted({x for line in lines for x in line.xs})
        if len(ticks) <= 12:  # the measured points themselves, as numbers
            ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
            ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _categorical(rows: Sequence[tuple[str, str, Any]], path: Path, *, title: str, ylabel: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 4.4))
    for x, (label, arch, interval) in enumerate(rows):
        err = None
        if np.isfinite(interval.half_width):
            err = [[interval.mean - interval.low], [interval.high - interval.mean]]
        ax.errorbar([x], [interval.mean], yerr=err, fmt="o", capsize=4, color=colour(arch), label=label)
    ax.set_xticks(range(len(rows)), [label for label, _, _ in rows], rotation=30, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def metric_figure(summary: Any, metric: str, path: Path) -> Path | None:
    """The figure of metric base name ``metric`` over every arm of ``summary`` (``results.Summary``); None when no
    arm has it. The interval is each point's 95% t-interval over seeds (see the module docstring for the axes)."""
    spec = summary.spec
    lines: list[Line] = []
    rows: list[tuple[str, str, Any]] = []
    for arm in spec.arms:
        points = summary.intervals.get(arm.name, {})
        along_sweep: list[tuple[float, Any]] = []
        for point in arm.points:
            label = "" if arm.sweep is None else f"{arm.sweep.symbol}={point}"
            metrics = {split_metric(k)[1]: v for k, v in points.get(label, {}).items() if split_metric(k)[0] == metric}
            numeric = [(point_value(p), v) for p, v in metrics.items() if point_value(p) is not None]
            name = arm.label + (f", {label}" if label else "")
            if len(numeric) > 1:
                numeric.sort()
                lines.append(Line(name, arm.arch, [x for x, _ in numeric], *_columns([v for _, v in numeric])))
            elif metrics and arm.sweep and isinstance(point, (int, float)):
                along_sweep.append((float(point), next(iter(metrics.values()))))
            elif metrics:
                rows.append((name, arm.arch, next(iter(metrics.values()))))
        if along_sweep:
            xs, columns = [x for x, _ in along_sweep], _columns([v for _, v in along_sweep])
            lines.append(Line(arm.label, arm.arch, xs, *columns, panel=sweep_label(arm.sweep.key, arm.sweep.symbol)))
    title = f"{spec.name}: {metric} (mean and 95% interval over seeds)"
    if lines:
        bins = any("-" in k.rpartition("@")[2] for points in summary.intervals.values() for m in points.values()
                   for k in m if k.rpartition("@")[0] == metric)  # fmt: skip
        xlabel = "token index (last of each bin)" if bins else "context (tokens)"
        return _draw(lines, path, title=title, xlabel=xlabel, ylabel=unit_of(metric), logx=True)
    if rows:
        return _categorical(rows, path, title=title, ylabel=unit_of(metric))
    return None


def _columns(intervals: Sequence[Any]) -> tuple[list[float], list[float], list[float]]:
    return [i.mean for i in intervals], [i.low for i in intervals], [i.high for i in intervals]


def curve_bands(curves: dict[int, list[float]], smooth: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval at each index of per-seed curves (each log-smoothed first); (T,) arrays. One curve
    gives infinite bounds."""
    from tttlm.eval.perplexity import log_smooth

    stack = np.stack([log_smooth(c) if smooth else np.asarray(c, dtype=np.float64) for c in curves.values()])
    mean = stack.mean(axis=0)
    if stack.shape[0] == 1:
        return mean, np.full_like(mean, -np.inf), np.full_like(mean, np.inf)
    half = t_quantile_975(stack.shape[0] - 1) * stack.std(axis=0, ddof=1) / np.sqrt(stack.shape[0])
    return mean, mean - half, mean + half


def curve_figure(summary: Any, name: str, path: Path, reference: str | None) -> Path | None:
    """Per-token curve ``name`` of every arm (minus ``reference``'s curve of the same seed, if given), log-x."""
    spec = summary.spec
    lines = []
    ref_curves = summary.curves.get(reference, {}).get("", {}).get(name, {}) if reference else {}
    for arm in spec.arms:
        for label, by_name in summary.curves.get(arm.name, {}).items():
            curves = by_name.get(name)
            if not curves:
                continue
            if reference:
                seeds = sorted(set(curves) & set(ref_curves))
                if not seeds:
                    continue
                curves = {s: list(np.asarray(curves[s]) - np.asarray(ref_curves[s])) for s in seeds}
            mean, low, high = curve_bands(curves)
            legend = arm.label + (f", {label}" if label else "")
            lines.append(Line(legend, arm.arch, list(range(1, mean.size + 1)), list(mean), list(low), list(high)))
    if not lines:
        return None
    ylabel = f"loss − {reference}'s loss (nats / token)" if reference else "loss (nats / token)"
    title = f"{spec.name}: loss by token index (95% band over seeds)"
    return _draw(lines, path, title=title, xlabel="token index (log scale)", ylabel=ylabel, logx=True)
