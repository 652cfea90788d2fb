"""Pool run.sh's runs: S-NIAH-1 accuracy per arch and length over seeds, split by the needle's distance.

    python docs/results/recall/needle-seeds-T512/summary.py RUNS OUT   # run.sh: runs/needle-seeds-T512 .../results

Reads ``RUNS/<arch>-<seed>/eval/niah.json`` (and the answer-loss line of ``RUNS/<arch>-<seed>.log``) and writes to
``OUT``: ``summary.json``, ``summary.md`` and ``by_distance.png``, plus each run's ``niah.json`` / ``niah.md`` under
``OUT/<arch>-<seed>/``. Accuracy over seeds is the mean of the per-seed accuracies with its 95% t-interval
(``tttlm.experiments.stats``); the split by distance pools the samples of every seed (the same 20 evaluation prompts
per seed) with a 95% Wilson interval.
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
from tttlm.palette import colour

ARCHS = ("full-attention", "swa")
WINDOW = 64  # the tiny swa preset's window; two layers of it reach 2 x 64 tokens back
EDGES = (64, 128, 192, 256, 320, 448)
LOSS_LINE = re.compile(r"loss per answer token ([\d.]+) \(right\) vs ([\d.]+) .* lower in (\d+)/(\d+)")


def runs_of(root: Path, arch: str) -> list[tuple[int, Path]]:
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in root.glob(f"{arch}-[0-9]*") if p.is_dir()]
    return sorted((s, p) for s, p in found if (p / "eval" / "niah.json").exists())


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}"


def main(root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"window": WINDOW, "edges": list(EDGES), "archs": {}}
    rows, distance_rows = [], []
    for arch in ARCHS:
        runs = runs_of(root, arch)
        if not runs:
            continue
        records, per_seed = [], {}
        for seed, run in runs:
            payload = json.loads((run / "eval" / "niah.json").read_text())
            records += payload["records"]
            per_seed[seed] = {"accuracy": payload["accuracy"]["s-niah-1"]}
            match = LOSS_LINE.search((root / f"{run.name}.log").read_text())
            if match:
                right, other, wins, n = match.groups()
                per_seed[seed]["answer_loss"] = {"right": float(right), "other": float(other), "wins": int(wins),
                                                 "n": int(n)}  # fmt: skip
            target = out / run.name
            target.mkdir(exist_ok=True)
            for name in ("niah.json", "niah.md"):
                shutil.copy(run / "eval" / name, target / name)
        lengths = sorted({r["length"] for r in records})
        over_seeds = {}
        for n in lengths:
            values = [per_seed[s]["accuracy"][str(n)] for s in sorted(per_seed)]
            over_seeds[n] = t_interval(values).to_json()
            ci = over_seeds[n]
            interval = "1 seed" if ci["low"] is None else f"[{pct(max(0, ci['low']))}, {pct(min(1, ci['high']))}]"
            rows.append([arch, str(n), ", ".join(pct(v) for v in values), f"{pct(ci['mean'])} {interval}"])
        split = distance_table(records, EDGES)["s-niah-1"]
        for n in lengths:
            for c in split[n]:
                if c["n"]:
                    hi = "∞" if c["high_distance"] is None else c["high_distance"]
                    wilson = f"{pct(c['accuracy'])} [{pct(c['low'])}, {pct(c['high'])}]"
                    distance_rows.append([arch, str(n), f"{c['low_distance']} < d ≤ {hi}", wilson, str(c["n"])])
        summary["archs"][arch] = {"seeds": per_seed, "over_seeds": over_seeds, "by_distance": split}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    losses = [
        [arch, str(seed), f"{v['answer_loss']['right']:.3f} / {v['answer_loss']['other']:.3f}",
         f"{v['answer_loss']['wins']}/{v['answer_loss']['n']}"]
        for arch, entry in summary["archs"].items() for seed, v in entry["seeds"].items() if "answer_loss" in v
    ]  # fmt: skip
    text = (
        "S-NIAH-1 accuracy (%), 20 samples per seed and length; mean [95% t-interval] over seeds\n\n"
        + markdown_table(["arch", "length", "per seed", "mean [95% t-interval]"], rows)
        + f"\n\nBy the needle's distance d from the end of the prompt (tokens; SWA window {WINDOW}, two layers), every"
        " seed's samples pooled, [95% Wilson]\n\n"
        + markdown_table(["arch", "length", "distance", "accuracy (%)", "samples"], distance_rows)
        + "\n\nLoss per answer token at 512, right / another sample's answer, and how often the right one is lower\n\n"
        + markdown_table(["arch", "seed", "loss right / other", "right lower"], losses)
        + "\n"
    )
    (out / "summary.md").write_text(text)
    plot(out / "by_distance.png", summary)
    print(text)


def plot(path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({int(n) for entry in summary["archs"].values() for n in entry["by_distance"]})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5 * len(lengths), 3.6), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], lengths, strict=True):
        for arch, entry in summary["archs"].items():
            cells = [c for c in entry["by_distance"][n] if c["n"]]
            mids = [(c["low_distance"] + (c["high_distance"] or 2 * c["low_distance"])) / 2 for c in cells]
            acc = [c["accuracy"] for c in cells]
            ax.plot(mids, acc, "o-", color=colour(arch), label=arch)
            ax.fill_between(mids, [c["low"] for c in cells], [c["high"] for c in cells], color=colour(arch), alpha=0.2)
        for k, label in ((1, "window"), (2, "2 × window")):
            ax.axvline(k * summary["window"], color="black", linestyle=":" if k == 2 else "--", linewidth=1)
            ax.text(k * summary["window"], 1.02, label, ha="center", fontsize=8)
        ax.set_ylim(-0.02, 1.08)
        ax.set_xlabel("needle distance from the end of the prompt (tokens)")
        ax.set_title(f"S-NIAH-1 at context {n}" + (" (training length)" if n == 512 else ""))
    axes[0, 0].set_ylabel("accuracy (95% Wilson band)")
    axes[0, 0].legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
