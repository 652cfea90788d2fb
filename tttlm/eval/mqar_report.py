"""The MQAR report: a markdown table and the accuracy-vs-state-bytes plot (as in the Based paper's Figure 2) of
``mqar_sweep.summarize``'s rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tttlm.palette import colour, line_style


def _cell(interval: dict[str, Any] | None) -> str:
    if interval is None:
        return "–"
    if interval["low"] is None:
        return f"{interval['mean']:.3f} (1 seed)"
    return f"{interval['mean']:.3f} [{max(interval['low'], 0):.3f}, {min(interval['high'], 1):.3f}]"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (arch, width, pairs): best lr, accuracy (mean [95% interval] over seeds) overall, within and
    beyond the window, state bytes, parameters. A model at 0 everywhere is marked as not having learned the task."""
    lines = [
        "| arch | d_model | pairs | best lr | seeds | accuracy | within window | beyond window | state bytes | params"
        " |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        accuracy = _cell(r["accuracy"])
        if r["accuracy"] is not None and r["accuracy"]["mean"] == 0:
            accuracy = "0 (did not learn the task)"
        lines.append(
            f"| {r['arch']} | {r['d_model']} | {r['num_pairs']} | {r['lr']:g} | {r['seeds']} | {accuracy} | "
            f"{_cell(r['accuracy_within'])} | {_cell(r['accuracy_beyond'])} | {r['state_bytes']:,} | "
            f"{r['parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Accuracy vs state bytes (log x), one line per (arch, pairs) through its widths, with 95% interval bars and
    each seed's accuracy as a faint dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_pairs = sorted({r["num_pairs"] for r in rows})
    fig, axes = plt.subplots(1, len(all_pairs), figsize=(5 * len(all_pairs), 4), squeeze=False, sharey=True)
    for ax, pairs in zip(axes[0], all_pairs, strict=True):
        for arch in sorted({r["arch"] for r in rows}):
            line = sorted(
                (r for r in rows if r["arch"] == arch and r["num_pairs"] == pairs), key=lambda r: r["d_model"]
            )
            if not line:
                continue
            x = [r["state_bytes"] for r in line]
            y = [r["accuracy"]["mean"] for r in line]
            low = [r["accuracy"]["mean"] - (r["accuracy"]["low"] or r["accuracy"]["mean"]) for r in line]
            high = [(r["accuracy"]["high"] or r["accuracy"]["mean"]) - r["accuracy"]["mean"] for r in line]
            ax.errorbar(
                x, y, yerr=[low, high], color=colour(arch), linestyle=line_style(0), marker="o", capsize=3, label=arch
            )
            for r in line:
                seeds = r["seed_accuracies"]
                ax.scatter([r["state_bytes"]] * len(seeds), seeds, color=colour(arch), s=10, alpha=0.4, zorder=3)
                ax.annotate(f"d={r['d_model']}", (r["state_bytes"], r["accuracy"]["mean"]), fontsize=6, alpha=0.6)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("state bytes at the end of the sequence (log)")
        ax.set_title(f"MQAR, {pairs} key-value pairs")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (best lr, 95% CI over seeds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
