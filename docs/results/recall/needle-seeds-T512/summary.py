"""Pool run.sh's runs: S-NIAH-1 accuracy per model and length over seeds, and by the needle's distance.

    python docs/results/recall/needle-seeds-T512/summary.py RUNS OUT   # run.sh: runs/needle-seeds-T512 .../results

Reads ``RUNS/<name>-<seed>/eval/niah.json`` (random depths), ``.../eval-depths/niah.json`` (fixed depths) and the
answer-loss line of ``RUNS/<name>-<seed>.log``; writes to ``OUT``: ``summary.json``, ``summary.md`` and
``by_distance.png``, plus each run's niah.json / niah.md under ``OUT/<name>-<seed>/``. Accuracy over seeds is the mean
of the per-seed accuracies (random depths, 20 samples per seed and length) with its 95% t-interval
(``tttlm.experiments.stats``); the split by distance pools every seed's samples at 512, random and fixed depths, with
a 95% Wilson interval.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from tttlm.eval.niah import distance_table
from tttlm.eval.report import markdown_table
from tttlm.experiments.stats import t_interval
from tttlm.palette import styles_for

# run name -> the model's attention window (None: full attention)
MODELS = {"full-attention": None, "swa-w256": 256, "swa-w64": 64}
EDGES = (96, 128, 160, 192, 224, 256, 288, 320, 352)
LOSS_LINE = re.compile(r"loss per answer token ([\d.]+) \(right\) vs ([\d.]+) .* lower in (\d+)/(\d+)")


def runs_of(root: Path, name: str) -> list[tuple[int, Path]]:
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in root.glob(f"{name}-[0-9]*") if p.is_dir()]
    return sorted((s, p) for s, p in found if (p / "eval" / "niah.json").exists())


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}"


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"records": []}


def main(root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"edges": list(EDGES), "models": {}}
    rows, distance_rows, losses = [], [], []
    for name, window in MODELS.items():
        runs = runs_of(root, name)
        if not runs:
            continue
        pooled, per_seed = [], {}
        for seed, run in runs:
            random_depths = read(run / "eval" / "niah.json")
            fixed = read(run / "eval-depths" / "niah.json")
            pooled += [r for r in random_depths["records"] + fixed["records"] if r["length"] == 512]
            per_seed[seed] = {"accuracy": random_depths["accuracy"]["s-niah-1"]}
            match = LOSS_LINE.search((root / f"{run.name}.log").read_text())
            if match:
                right, other, wins, n = match.groups()
                per_seed[seed]["answer_loss"] = {"right": float(right), "other": float(other), "wins": int(wins),
                                                 "n": int(n)}  # fmt: skip
                losses.append([name, str(seed), f"{float(right):.3f} / {float(other):.3f}", f"{wins}/{n}"])
            for sub in ("eval", "eval-depths"):
                if (run / sub / "niah.json").exists():
                    target = out / run.name / sub
                    target.mkdir(parents=True, exist_ok=True)
                    for file in ("niah.json", "niah.md"):
                        shutil.copy(run / sub / file, target / file)
        over_seeds = {}
        for n in sorted({int(k) for v in per_seed.values() for k in v["accuracy"]}):
            values = [per_seed[s]["accuracy"][str(n)] for s in sorted(per_seed)]
            ci = over_seeds[n] = t_interval(values).to_json()
            interval = "1 seed" if ci["low"] is None else f"[{pct(max(0, ci['low']))}, {pct(min(1, ci['high']))}]"
            seeds_text = ", ".join(pct(v) for v in values)
            rows.append([name, str(window or "—"), str(n), seeds_text, f"{pct(ci['mean'])} {interval}"])
        split = distance_table(pooled, EDGES)["s-niah-1"][512]
        for c in split:
            inside = [r["distance"] for r in pooled if c["low_distance"] < r["distance"] <= (c["high_distance"] or 1e9)]
            c["mean_distance"] = sum(inside) / len(inside) if inside else None  # where the plot puts the range
            if c["n"]:
                hi = "∞" if c["high_distance"] is None else c["high_distance"]
                wilson = f"{pct(c['accuracy'])} [{pct(c['low'])}, {pct(c['high'])}]"
                distance_rows.append([name, f"{c['low_distance']} < d ≤ {hi}", wilson, str(c["n"])])
        summary["models"][name] = {"window": window, "seeds": per_seed, "over_seeds": over_seeds, "by_distance": split}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = (
        "S-NIAH-1 accuracy (%), random depths, 20 samples per seed and length; mean [95% t-interval] over seeds\n\n"
        + markdown_table(["model", "window", "length", "per seed", "mean [95% t-interval]"], rows)
        + "\n\nAt 512 by the needle's distance d from the end of the prompt (tokens), every seed's samples (random and"
        " fixed depths) pooled, [95% Wilson]\n\n"
        + markdown_table(["model", "distance", "accuracy (%)", "samples"], distance_rows)
        + "\n\nLoss per answer token at 512, right / another sample's answer, and how often the right one is lower\n\n"
        + markdown_table(["model", "seed", "loss right / other", "right lower"], losses)
        + "\n"
    )
    (out / "summary.md").write_text(text)
    plot(out / "by_distance.png", summary)
    print(text)


def plot(path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    styles = styles_for(list(summary["models"]))
    for name, entry in summary["models"].items():
        cells = [c for c in entry["by_distance"] if c["n"]]
        mids = [c["mean_distance"] for c in cells]
        seeds = len(entry["seeds"])
        label = f"{name} ({seeds} seed{'s' * (seeds > 1)})"
        ax.plot(mids, [c["accuracy"] for c in cells], marker="o", label=label, **styles[name])
        ax.fill_between(mids, [c["low"] for c in cells], [c["high"] for c in cells], alpha=0.15,
                        color=styles[name]["color"])  # fmt: skip
        if entry["window"]:
            ax.axvline(entry["window"], linewidth=1, **styles[name])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("needle distance from the end of the prompt (tokens)")
    ax.set_ylabel("S-NIAH-1 accuracy (95% Wilson band)")
    ax.set_title("S-NIAH-1 at 512 (the training length); vertical lines: SWA windows", fontsize=10)
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
