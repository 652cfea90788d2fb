"""Writing evaluation results: JSON, Markdown tables, CSV and PNG plots (matplotlib, headless)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tttlm.eval.perplexity import log_smooth
from tttlm.palette import styles_for


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)  # atomically: compare never reads half a file
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        # fixed decimals so that a column lines up: perplexities (>= 100) to 0.1, losses and deltas to 0.001
        if isinstance(x, float):
            return "n/a" if math.isnan(x) else f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"
        if isinstance(x, int) and not isinstance(x, bool):
            return f"{x:,}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ppl_markdown(name: str, results: Sequence[dict]) -> str:
    rows = [(r["context"], r["documents"], r["loss"], r["ppl"]) for r in results]
    return f"Perplexity vs context — {name}\n\n" + markdown_table(["context", "documents", "loss", "ppl"], rows)


def plot_ppl(path: Path, runs: dict[str, Sequence[dict]]) -> Path:
    """Perplexity vs context length (log-x), one line per run: ``runs`` maps a label to ``ContextResult`` dicts."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = styles_for(list(runs))
    for label, results in runs.items():
        ax.plot([r["context"] for r in results], [r["ppl"] for r in results], marker="o", label=label,
                **styles[label])  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_position_csv(path: Path, curves: dict[str, np.ndarray], deltas: dict[str, np.ndarray]) -> Path:
    """One row per token index: the mean loss of each curve, then ``delta_<name>`` (loss − reference loss)."""
    names = list(curves)
    length = min(len(v) for v in curves.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["position", *names, *[f"delta_{n}" for n in deltas]])
        for t in range(length):
            writer.writerow([t, *[f"{curves[n][t]:.6f}" for n in names], *[f"{d[t]:.6f}" for d in deltas.values()]])
    return path


def read_position_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], np.asarray(rows[1:], dtype=np.float64)
    return {name: body[:, i] for i, name in enumerate(header) if i}


def plot_by_position(
    path: Path, curves: dict[str, np.ndarray], deltas: dict[str, np.ndarray], ref: str | None = None
) -> Path:
    """Smoothed loss vs token index (log-x), and with a reference a second panel of loss − reference loss."""
    plt = _pyplot()
    panels = 2 if deltas else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    # one colour per run in both panels (the delta panel has no line for the reference)
    styles = styles_for(list(dict.fromkeys([*curves, *deltas])))  # the arch's colour of tttlm.palette
    for name, values in curves.items():
        x = np.arange(1, len(values) + 1)
        axes[0, 0].plot(x, log_smooth(values), label=name, **styles[name])
    axes[0, 0].set_ylabel("loss (nats, smoothed)")
    axes[0, 0].set_title("loss by token index")
    for name, values in deltas.items():
        x = np.arange(1, len(values) + 1)
        axes[0, 1].plot(x, log_smooth(values), label=name, **styles[name])
    if deltas:
        axes[0, 1].axhline(0, color="black", lw=0.8)
        axes[0, 1].set_ylabel(f"loss − loss of {ref} (smoothed)")
        axes[0, 1].set_title(f"loss Δ vs {ref}")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("token index")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.0f}"


def niah_markdown(
    methods: dict[str, dict[str, dict[int, float]]], intervals: dict[str, dict[str, dict[int, dict]]] | None = None
) -> str:
    """The paper's layout: one row per method, columns grouped by task then context length (accuracy in %); with
    ``intervals`` (``niah.interval_table`` per method) each cell also gives its 95% Wilson interval."""
    tasks = sorted({t for table in methods.values() for t in table})
    columns = [(t, n) for t in tasks for n in sorted({n for table in methods.values() for n in table.get(t, {})})]
    header = ["method", *[f"{t} {n}" for t, n in columns]]

    def cell(name: str, task: str, n: int) -> str:
        text = _percent(methods[name].get(task, {}).get(n))
        found = (intervals or {}).get(name, {}).get(task, {}).get(n)
        return text if found is None else f"{text} [{_percent(found['low'])}, {_percent(found['high'])}]"

    rows = [[name, *[cell(name, t, n) for t, n in columns]] for name in methods]
    title = "S-NIAH accuracy (%)" + (", [95% Wilson interval]" if intervals else "")
    return f"{title}\n\n" + markdown_table(header, rows)


def niah_distance_markdown(table: dict[str, dict[int, list[dict]]]) -> str:
    """``niah.distance_table`` as rows of (task, length, needle distance range): accuracy in %, 95% Wilson interval,
    samples."""
    rows = []
    for task, by_len in sorted(table.items()):
        for length, cells in sorted(by_len.items()):
            for c in cells:
                span = f"{c['low_distance']} < d" + ("" if c["high_distance"] is None else f" <= {c['high_distance']}")
                found = "–" if c["accuracy"] is None else _percent(c["accuracy"])
                if c["accuracy"] is not None:
                    found += f" [{_percent(c['low'])}, {_percent(c['high'])}]"
                rows.append([task, str(length), span, found, str(c["n"])])
    header = ["task", "length", "needle distance d (tokens)", "accuracy (%) [95% Wilson]", "samples"]
    return "S-NIAH accuracy by the needle's distance from the end of the prompt\n\n" + markdown_table(header, rows)


def plot_niah_heatmaps(path: Path, grids: dict[str, tuple[list[float], list[int], np.ndarray]]) -> Path:
    """One depth × length accuracy heatmap per task."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 3.6), squeeze=False, layout="constrained")
    image = None
    for ax, (task, (depths, lengths, grid)) in zip(axes[0], grids.items(), strict=True):
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="upper")
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], rotation=45)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("context length")
        ax.set_title(task)
    axes[0, 0].set_ylabel("needle depth")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="accuracy")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
