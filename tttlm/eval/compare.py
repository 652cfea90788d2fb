"""``tttlm compare RUN... [--ref RUN]``: one Markdown report putting runs side by side, from whatever results they
hold.

Per run it reads ``metrics.jsonl`` (training curves), ``eval/ppl.json``, ``eval/by_position.csv`` and
``eval/niah.json`` (written by ``tttlm eval``); a missing piece is listed as missing, not an error.
Training FLOPs are the usual estimate 6 · parameters · tokens (parameters counted from ``model/config.json``).
With ``ref`` (one of the runs), loss by token index also gets the second paper's view: each run's loss minus the
reference's at every position, plotted and averaged over ranges of positions.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tttlm.eval.niah import depth_grid
from tttlm.eval.report import (
    _pyplot,
    markdown_table,
    niah_markdown,
    plot_by_position,
    plot_ppl,
    read_position_csv,
)
from tttlm.palette import styles_for
from tttlm.train.metrics import read_metrics
from tttlm.train.run_dir import RunDir


def _metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """(train records, eval records with ``tokens`` filled from the train record of the same step)."""
    records = read_metrics(run)
    train = [r for r in records if r.get("kind") == "train" and "tokens" in r]
    tokens_at = {r["step"]: r["tokens"] for r in train}
    evals = [
        {**r, "tokens": tokens_at[r["step"]]} for r in records if r.get("kind") == "eval" and r["step"] in tokens_at
    ]
    return train, evals


def _parameters(run: Path) -> int | None:
    try:
        from transformers import AutoConfig

        from tttlm.models.registry import count_parameters

        return count_parameters(AutoConfig.from_pretrained(RunDir(run).model))
    except (OSError, ValueError, KeyError):
        return None


def _plot_curves(path: Path, curves: dict[str, tuple[list[dict], list[dict]]], scale: dict[str, float], xlabel: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = styles_for(list(curves))
    for name, (train, evals) in curves.items():
        if train:
            color = styles[name]["color"]
            ax.plot([r["tokens"] * scale[name] for r in train], [r["loss"] for r in train], label=f"{name} train",
                    **styles[name])  # fmt: skip
            if evals:
                x = [r["tokens"] * scale[name] for r in evals]
                ax.plot(x, [r["val_loss"] for r in evals], "o--", color=color, label=f"{name} val")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def position_ranges(length: int) -> list[tuple[int, int]]:
    """Ranges of token indices [a, b) growing 4x (1–16, 17–64, ...) up to ``length``, for the tables."""
    edges = [0, *[e for e in (16, 64, 256, 1024, 4096, 16384, 65536) if e < length], length]
    return list(itertools.pairwise(edges))


def _position_section(position: dict[str, np.ndarray], ref: str | None, out: Path) -> list[str]:
    length = min(len(v) for v in position.values())
    curves = {n: v[:length] for n, v in position.items()}
    deltas = {n: v - curves[ref] for n, v in curves.items() if n != ref} if ref else {}
    plot_by_position(out / "by_position.png", curves, deltas, ref)
    ranges = position_ranges(length)
    header = ["run", *[f"tokens {a + 1}–{b}" for a, b in ranges], f"mean over {length}"]
    rows = [[n, *[float(v[a:b].mean()) for a, b in ranges], float(v.mean())] for n, v in curves.items()]
    lines = ["## Loss by token index", "", "![loss by position](by_position.png)", "", "Mean loss:", ""]
    lines += [markdown_table(header, rows), ""]
    if deltas:
        rows = [[n, *[float(d[a:b].mean()) for a, b in ranges], float(d.mean())] for n, d in deltas.items()]
        lines += [f"Loss Δ = loss − loss of {ref} (negative: better than {ref}):", "", markdown_table(header, rows), ""]
    return lines


def _niah_heatmaps(path: Path, records: dict[str, list[dict]]) -> None:
    """One row of depth × length heatmaps (one per task) per run."""
    plt = _pyplot()
    tasks = sorted({r["task"] for rs in records.values() for r in rs})
    fig, axes = plt.subplots(
        len(records), len(tasks), figsize=(3.6 * len(tasks), 2.8 * len(records)), squeeze=False, layout="constrained"
    )
    image = None
    for row, (name, rs) in zip(axes, records.items(), strict=True):
        for ax, task in zip(row, tasks, strict=True):
            depths, lengths, grid = depth_grid(rs, task)
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
            ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], fontsize=7)
            ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=7)
            ax.set_title(f"{name}: {task}", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="accuracy (depth × context length)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_comparison(runs: Sequence[Path | str], out: Path | str, ref: Path | str | None = None) -> Path:
    """Write ``out/report.md`` and its PNGs; return the report's path. ``ref``: one of ``runs`` (a directory or
    its name), the reference of the loss-Δ-by-position view."""
    runs = [Path(r).expanduser() for r in runs]
    for run in runs:
        if not run.is_dir():
            raise FileNotFoundError(f"run directory {run} does not exist")
    names = [r.resolve().name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r) for r in runs]
    ref_name = None
    if ref is not None:
        matches = [n for n, r in zip(names, runs, strict=True) if str(ref) in (n, str(r)) or Path(ref) == r]
        if not matches:
            raise ValueError(f"--ref {ref} is not one of the runs compared ({', '.join(names)})")
        ref_name = matches[0]
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Run comparison", "", "Runs: " + ", ".join(f"`{r}`" for r in runs), ""]
    missing: list[str] = []

    def results(file: str) -> dict[str, Path]:
        """``eval/<file>`` of each run that has it, by run name; the others are listed as missing."""
        found = {}
        for n, r in zip(names, runs, strict=True):
            path = RunDir(r).eval / file
            if path.exists():
                found[n] = path
            else:
                missing.append(f"{n}: {path.relative_to(r)}")
        return found

    curves = {n: _metrics(r) for n, r in zip(names, runs, strict=True)}
    missing += [f"{n}: {RunDir(r).metrics.name}" for n, r in zip(names, runs, strict=True) if not curves[n][0]]
    curves = {n: c for n, c in curves.items() if c[0]}
    if curves:
        _plot_curves(out / "training_tokens.png", curves, dict.fromkeys(curves, 1.0), "training tokens")
        lines += ["## Training curves", "", "![loss vs tokens](training_tokens.png)", ""]
        params = {n: _parameters(r) for n, r in zip(names, runs, strict=True) if n in curves}
        flops = {n: 6.0 * p for n, p in params.items() if p}
        if flops:
            _plot_curves(out / "training_flops.png", {n: curves[n] for n in flops}, flops, "training FLOPs (6·N·D)")
            lines += ["![loss vs FLOPs](training_flops.png)", ""]
        rows = []
        for n, (train, evals) in curves.items():
            final_val = evals[-1]["val_loss"] if evals else float("nan")
            rows.append([n, params.get(n) or "?", train[-1]["step"], train[-1]["tokens"], train[-1]["loss"], final_val])
        lines += [markdown_table(["run", "parameters", "steps", "tokens", "final train loss", "final val loss"], rows)]

    ppl = {n: json.loads(path.read_text())["results"] for n, path in results("ppl.json").items()}
    if ppl:
        plot_ppl(out / "ppl.png", ppl)
        contexts = sorted({x["context"] for res in ppl.values() for x in res})
        rows = [
            [n, *[next((x["ppl"] for x in res if x["context"] == c), float("nan")) for c in contexts]]
            for n, res in ppl.items()
        ]
        lines += [
            "## Perplexity vs context",
            "",
            "![ppl vs context](ppl.png)",
            "",
            markdown_table(["run", *map(str, contexts)], rows),
        ]

    position = {}
    for n, path in results("by_position.csv").items():
        columns = read_position_csv(path)
        first = next(k for k in columns if not k.startswith("delta_"))
        position[n] = columns[first]  # the run's own (first) checkpoint
    if position:
        lines += _position_section(position, ref_name if ref_name in position else None, out)

    niah, niah_records = {}, {}
    for n, path in results("niah.json").items():
        payload = json.loads(path.read_text())
        niah[n] = {t: {int(k): v for k, v in by_len.items()} for t, by_len in payload["accuracy"].items()}
        niah_records[n] = payload["records"]
    if niah:
        _niah_heatmaps(out / "niah.png", niah_records)
        lines += ["## S-NIAH", "", niah_markdown(niah), "", "![S-NIAH heatmaps](niah.png)", ""]

    if missing:
        lines += ["## Not found", "", *[f"- {m}" for m in missing], ""]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
