"""PNG figures of the model benchmarks: curves against context length (log-x, like the papers' latency figures)
and bars of throughput."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tttlm.bench.tables import context_label
from tttlm.palette import LINE_STYLES, styles_for

Record = dict[str, Any]


@dataclass
class Panel:
    """One axes: ``lines`` maps a label to its (x, y) points."""

    title: str
    ylabel: str
    lines: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    xlabel: str = "context (tokens)"
    logy: bool = False


def curves(
    records: Sequence[Record], label: Callable[[Record], str], x: str, y: Callable[[Record], float | None]
) -> dict[str, tuple[list[float], list[float]]]:
    """Points (record[x], y(record)) per label, sorted by x; records whose y is None are left out."""
    points: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        value = y(r)
        if value is not None:
            points.setdefault(label(r), []).append((r[x], value))
    return {name: tuple(map(list, zip(*sorted(p), strict=True))) for name, p in points.items()}  # type: ignore[misc]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, title: str) -> None:
    plt = _pyplot()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: same records, same bytes
    plt.close(fig)


def plot_panels(panels: Sequence[Panel], path: Path, title: str, columns: int = 2) -> None:
    """Panels in a grid, x on a log-2 axis (context lengths double), one line with markers per label."""
    plt = _pyplot()
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        styles = styles_for(list(panel.lines))  # the arch's colour of tttlm.palette
        for name, (xs, ys) in panel.lines.items():
            ax.plot(xs, ys, marker="o", label=name, markersize=4, **styles[name])
        ax.set_xscale("log", base=2)
        ticks = sorted({x for xs, _ in panel.lines.values() for x in xs})
        ax.set_xticks(ticks, [context_label(int(x)) for x in ticks])
        ax.minorticks_off()
        if panel.logy:
            ax.set_yscale("log")
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if panel.lines:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    _save(fig, path, title)


def plot_bars(groups: dict[str, dict[str, float]], path: Path, title: str, ylabel: str) -> None:
    """Grouped bars: one group per key of ``groups`` (e.g. a size), one bar per label inside it; log-y."""
    plt = _pyplot()
    labels = list(dict.fromkeys(name for bars in groups.values() for name in bars))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels) * len(groups)), 4.2))
    width = 0.8 / max(len(labels), 1)
    styles = styles_for(labels)
    hatches = dict(zip(LINE_STYLES, ("", "//", "..", "xx"), strict=True))
    for i, name in enumerate(labels):
        xs = [g + i * width for g, bars in enumerate(groups.values()) if name in bars]
        ax.bar(xs, [bars[name] for bars in groups.values() if name in bars], width, label=name,
               color=styles[name]["color"], hatch=hatches[styles[name]["linestyle"]])  # fmt: skip
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], list(groups))
    ax.set_yscale("log")
    ax.set(ylabel=ylabel)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path, title)
