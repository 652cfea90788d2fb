"""``tttlm demo``: the whole pipeline on the default corpus in minutes on a laptop CPU.

corpus + tokenizer (``tttlm data prepare``, fetched once) → a tiny TTT-Linear and a tiny Transformer trained on the
same data for the same number of tokens → validation loss and loss by token index on held-out documents →
``report.md`` with the training curves and the loss-by-position plot (PNG).
Re-running it continues where an interrupted run stopped (the trainer's exact resume) and reuses finished runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from tttlm.data.prepare import ensure_prepared
from tttlm.models import load
from tttlm.train import config_from_dict, read_metrics, train
from tttlm.train.checkpoint import list_checkpoints
from tttlm.train.run_dir import RunDir

DEMO_ARCHS = ("ttt-linear", "transformer")
QUICK = {"steps": 20, "seq_len": 64}  # ``tttlm demo --quick``: every stage of the pipeline in about a minute


def demo_config(
    arch: str, run_dir: Path, data_dir: Path, steps: int, seq_len: int, overrides: dict | None = None
) -> dict:
    """The training config of one demo model: the tiny preset (with the model config ``overrides``), 16 sequences
    per step, the paper's schedule."""
    return {
        "name": f"demo-{arch}",
        "out_dir": str(run_dir),
        "seed": 0,
        "threads": 1,  # the tiny model's matmuls are too small to gain from a second thread
        "model": {"arch": arch, "size": "tiny", "overrides": dict(overrides or {})},
        "data": {"dir": str(data_dir), "seq_len": seq_len},
        "train": {"steps": steps, "batch_tokens": 16 * seq_len, "micro_batch_size": 16},
        "optim": {"lr": 3e-3, "min_lr": 1e-5, "warmup_steps": max(1, steps // 10), "weight_decay": 0.1},
        "eval": {"every": max(1, steps // 5), "tokens": 32 * seq_len},
        "checkpoint": {"every": max(1, steps // 5), "keep_last": 1},
        "log": {"every": 1, "tensorboard": False, "progress": True},
    }


def run_summary(run_dir: Path) -> dict[str, float]:
    records = read_metrics(run_dir)
    train_records = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    model = load(RunDir(run_dir).model)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": train_records[-1]["step"],
        "tokens": train_records[-1]["tokens"],  # cumulative in metrics.jsonl
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train_records),
        "train_loss": statistics.fmean(r["loss"] for r in train_records[-10:]),
        "val_loss": evals[-1]["val_loss"],
        "val_ppl": evals[-1]["val_ppl"],
    }


def plot_training(runs: dict[str, Path], path: Path, title: str = "tttlm demo: tiny models on the corpus") -> None:
    """Training loss (smoothed) and validation loss against tokens seen, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tttlm.palette import styles_for

    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = styles_for(list(runs))
    for name, run_dir in runs.items():
        colour = styles[name]["color"]
        records = read_metrics(run_dir)
        train_records = [r for r in records if r["kind"] == "train"]
        tokens = [r["tokens"] for r in train_records]  # cumulative
        losses = [r["loss"] for r in train_records]
        window = max(1, len(losses) // 25)
        smooth = [statistics.fmean(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(tokens, smooth, color=colour, label=f"{name} train")
        per_step = {r["step"]: r["tokens"] for r in train_records}
        evals = [(per_step[r["step"]], r["val_loss"]) for r in records if r["kind"] == "eval" and r["step"] in per_step]
        ax.plot(*zip(*evals, strict=True), "o--", color=colour, label=f"{name} val")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small" if len(runs) > 4 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_by_position(runs: dict[str, Path], data_dir: Path, out: Path, length: int) -> str:
    """Loss by token index on held-out documents (first ``length`` tokens of up to 8 val documents) for every run,
    with the difference to the last run, as ``by_position.png``; returns a Markdown table of mean losses over
    ranges of positions (``length`` may exceed the training context: that is the point of a long-context model)."""
    from tttlm.data.packing import PackedDataset
    from tttlm.eval import loss_by_position
    from tttlm.eval.compare import position_ranges
    from tttlm.eval.report import plot_by_position

    data = PackedDataset(data_dir, "val")
    length = min(length, max(len(data.document(i)) for i in range(data.num_documents)))
    curves = {}
    for name, run_dir in runs.items():
        model = load(RunDir(run_dir).model).eval()
        with torch.no_grad():
            curves[name], documents = loss_by_position(model, data, length, max_documents=8)
    ref = list(runs)[-1]
    deltas = {name: curve - curves[ref] for name, curve in curves.items() if name != ref}
    plot_by_position(out / "by_position.png", curves, deltas, ref)
    ranges = position_ranges(length)
    header = "| model | " + " | ".join(f"tokens {a + 1}–{b}" for a, b in ranges) + " |"
    rows = [header, "| --- |" + " --- |" * len(ranges)]
    for name, curve in curves.items():
        cells = [f"{curve[a:b].mean():.3f}" for a, b in ranges]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return (
        f"Loss by token index on the first {length} tokens of {documents} held-out (val) documents "
        f"(mean loss per range of positions; the models were trained on {{seq_len}}-token windows):\n\n"
        + "\n".join(rows)
        + "\n\n![loss by token index](by_position.png)\n"
    )


def write_report(runs: dict[str, Path], out: Path, position_section: str = "") -> Path:
    """``report.md`` (a table per model and the training-curve PNG) in ``out``; returns its path."""
    plot_training(runs, out / "training.png")
    rows = [
        "| model | parameters | steps | tokens | tokens/s | train loss (last 10) | val loss | val ppl |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run_dir in runs.items():
        s = run_summary(run_dir)
        rows.append(
            f"| {name} | {s['parameters']:,} | {s['steps']} | {s['tokens']:,} | {s['tokens_per_s']:,.0f} | "
            f"{s['train_loss']:.3f} | {s['val_loss']:.3f} | {s['val_ppl']:.1f} |"
        )
    report = out / "report.md"
    report.write_text(
        "# tttlm demo\n\n"
        "Tiny models (preset `tiny`) trained on the default corpus (Shakespeare, Milton, Austen, the KJV Bible) "
        "with the same data, tokenizer, trainer and budget; validation loss on held-out documents.\n\n"
        + "\n".join(rows)
        + "\n\n![training curves](training.png)\n\n"
        + (position_section + "\n" if position_section else "")
        + "Runs: "
        + ", ".join(f"`{p}`" for p in runs.values())
        + " (metrics.jsonl, checkpoints, model/).\n"
    )
    return report


def run_demo(
    out: Path | str = Path("runs/demo"),
    archs: Sequence[str] = DEMO_ARCHS,
    steps: int = 250,
    seq_len: int = 256,
    data_dir: Path | str | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Prepare the data if needed, train every arch of ``archs`` (or continue/reuse its run), write the report."""
    out = Path(out)
    data = ensure_prepared(data_dir, say=lambda line: say(f"[1/3] {line}"))
    runs = {}
    for i, arch in enumerate(archs, 1):
        run_dir = out / arch
        resume = bool(list_checkpoints(run_dir))
        say(f"[2/3] model {i}/{len(archs)}: {arch} ({'continuing' if resume else 'training'}, {steps} steps)")
        runs[arch] = train(config_from_dict(demo_config(arch, run_dir, data, steps, seq_len)), resume=resume)
    say("[3/3] evaluating loss by token index on held-out documents and writing the report")
    section = evaluate_by_position(runs, data, out, length=4 * seq_len).replace("{seq_len}", str(seq_len))
    return write_report(runs, out, section)
