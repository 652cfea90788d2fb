"""Summarise docs/results/e2e-from-pretrained/run.sh: loss by token range, mean and 95% t-interval over seeds, per arm;
the differences to the meta-learned arm, per seed then over seeds; a plot of the loss by token index.

    python docs/results/e2e-from-pretrained/summarize.py [runs/e2e-from-pretrained]

Writes results.json and by_position.png beside this file and prints the Markdown table the README holds.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tttlm.experiments.stats import t_interval
from tttlm.palette import colour

HERE = Path(__file__).parent
ARMS = {
    "tf": "source Transformer (full attention, trained at 512)",
    "swa": "(a) source with SWA only (e2e-init, inner lr 0)",
    "dyn": "(b) dynamic evaluation (e2e-init, inner lr 1, no meta-learning)",
    "meta": "converted + meta-learned (10 x 8192 tokens at 1024)",
    "scratch": "(c) TTT-E2E from scratch, same total tokens",
}
COLOURS = {"tf": colour("transformer"), "swa": colour("swa"), "scratch": colour("ttt-e2e")}
RANGES = ((1, 64), (65, 512), (513, 1024))  # within the window, within the training length, beyond it


def _losses(path: Path) -> np.ndarray:
    with path.open() as f:
        rows = list(csv.reader(f))
    return np.array([float(r[1]) for r in rows[1:]])


def _text(interval: dict, signed: bool = False) -> str:
    mean = f"{interval['mean']:+.3f}" if signed else f"{interval['mean']:.3f}"
    if interval["low"] is None:
        return f"{mean} (1 seed)"
    return f"{mean} ± {(interval['high'] - interval['low']) / 2:.3f}"


def main(root: Path) -> None:
    seeds = sorted(p for p in root.glob("seed*") if p.is_dir())
    curves: dict[str, list[np.ndarray]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm in ARMS:
            csv_path = seed / f"eval-{arm}" / "by_position.csv"
            if csv_path.is_file():
                curves[arm].append(_losses(csv_path))
    done = {arm: c for arm, c in curves.items() if c}
    # position p of the csv is token index p + 1 (the loss of predicting token p + 1 from tokens 0..p)
    table: dict[str, dict[str, dict]] = {}
    for arm, runs in done.items():
        table[arm] = {
            f"{lo}-{hi}": t_interval([float(run[lo - 1 : hi].mean()) for run in runs]).to_json() for lo, hi in RANGES
        }
    deltas: dict[str, dict[str, dict]] = {}
    if "meta" in done:
        for arm, runs in done.items():
            if arm == "meta" or len(runs) != len(done["meta"]):
                continue
            deltas[arm] = {
                f"{lo}-{hi}": t_interval(
                    [
                        float(run[lo - 1 : hi].mean() - m[lo - 1 : hi].mean())
                        for run, m in zip(runs, done["meta"], strict=True)
                    ]
                ).to_json()
                for lo, hi in RANGES
            }
    (HERE / "results.json").write_text(
        json.dumps({"seeds": [s.name for s in seeds], "loss": table, "minus_meta": deltas}, indent=1) + "\n"
    )
    header = "| arm | seeds | " + " | ".join(f"loss, tokens {lo}–{hi}" for lo, hi in RANGES) + " |"
    lines = [header, "|" + " --- |" * (2 + len(RANGES))]
    for arm, row in table.items():
        cells = [_text(v) for v in row.values()]
        lines.append(f"| {ARMS[arm]} | {len(done[arm])} | " + " | ".join(cells) + " |")
    if deltas:
        lines += [
            "",
            "| arm minus the meta-learned arm | " + " | ".join(f"tokens {lo}–{hi}" for lo, hi in RANGES) + " |",
        ]
        lines.append("|" + " --- |" * (1 + len(RANGES)))
        for arm, row in deltas.items():
            cells = [_text(v, signed=True) for v in row.values()]
            lines.append(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
    print("\n".join(lines))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm, runs in done.items():
        stacked = np.stack(runs)
        kernel = np.ones(16) / 16  # 16-token moving average: single positions are noisy over 8 documents
        smooth = np.stack([np.convolve(r, kernel, mode="valid") for r in stacked])
        x = np.arange(smooth.shape[1]) + 16
        mean = smooth.mean(0)
        ax.plot(x, mean, label=ARMS[arm], color=COLOURS.get(arm, colour(arm)))
        if len(runs) > 1:
            half = np.array([t_interval(col).half_width for col in smooth.T])
            ax.fill_between(x, mean - half, mean + half, color=COLOURS.get(arm, colour(arm)), alpha=0.2)
    for boundary, text in ((64, "window"), (512, "training length")):
        ax.axvline(boundary, color="black", lw=0.6, ls=":")
        ax.text(boundary, ax.get_ylim()[1], f" {text}", va="top", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("token index (log scale)")
    ax.set_ylabel("loss (nats/token), 16-token moving mean")
    ax.set_title(f"TTT-E2E from a pretrained Transformer, mean and 95% interval over {len(seeds)} seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "by_position.png", dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/e2e-from-pretrained"))
