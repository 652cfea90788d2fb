"""``tttlm ablations``: the first paper's ablations at the demo's tiny budget, as one command.

1. The ladder from linear attention to TTT-Linear (paper Table 1), one config switch per step, each row keeping the
   switches of the rows above it:

   linear attention: TTT-Linear with batch GD (one mini-batch as long as the training context), W0 = 0 fixed, a
   fixed inner lr and no inner LayerNorm; by paper §2.6 this *is* causal linear attention (with keys extended by a
   constant 1 for the inner bias; ``tests/models/test_ablation_switches.py`` checks the identity to 1e-12)
   → + mini-batch TTT (b = 16) → + LayerNorm and residual in the inner model → + learnable W0
   → + learnable inner lr (TTT-Linear as published) → + Mamba backbone.

2. The mini-batch size trade-off (paper Figure: perplexity vs forward time): TTT-Linear with b ∈ {1, 4, 16, 64},
   validation perplexity against the forward time per token of the trained model, measured in this run.

Every model is trained like ``tttlm demo``'s (tiny preset, 16 × ``seq_len`` tokens per step, the same data, seed and
schedule); re-running continues interrupted runs and reuses finished ones. Writes ``report.md``, ``results.json``,
``training.png`` and ``minibatch.png`` in ``--out``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tttlm.bench.timing import machine_info, time_call
from tttlm.data.prepare import ensure_prepared
from tttlm.demo import demo_config, plot_training, run_summary
from tttlm.models import load
from tttlm.palette import colour
from tttlm.train import config_from_dict, train
from tttlm.train.checkpoint import list_checkpoints
from tttlm.train.run_dir import RunDir

MINI_BATCH_SIZES = (1, 4, 16, 64)


@dataclass(frozen=True)
class Variant:
    """One trained model of the study: a run name, a label for the tables, its model config overrides."""

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)


def ladder(seq_len: int) -> list[Variant]:
    """The rows of the ladder; each row's overrides include every switch of the rows above it."""
    steps: list[tuple[str, str, dict[str, Any]]] = [
        (
            "linear-attention",
            f"linear attention = TTT-Linear with batch GD (b = {seq_len}, W0 = 0, fixed η, no inner LN)",
            {"mini_batch_size": seq_len, "ttt_inner_norm": False, "ttt_learn_init": False, "ttt_learn_lr": False},
        ),
        ("mini-batch", "+ mini-batch TTT (b = 16)", {"mini_batch_size": 16}),
        ("inner-norm", "+ LayerNorm and residual in f", {"ttt_inner_norm": True}),
        ("learn-init", "+ learnable W0", {"ttt_learn_init": True}),
        ("learn-lr", "+ learnable η (TTT-Linear)", {"ttt_learn_lr": True}),
        ("mamba-backbone", "+ Mamba backbone", {"backbone": "mamba"}),
    ]
    rows, overrides = [], {}
    for i, (name, label, switch) in enumerate(steps, 1):
        overrides = {**overrides, **switch}
        rows.append(Variant(f"ladder-{i}-{name}", label, overrides))
    return rows


def minibatch_sweep(sizes: Sequence[int]) -> list[Variant]:
    """TTT-Linear as published (transformer backbone) at each mini-batch size; b = 16 is the ladder's row 5."""
    return [
        Variant("ladder-5-learn-lr" if b == 16 else f"minibatch-{b}", f"TTT-Linear, b = {b}", {"mini_batch_size": b})
        for b in sizes
    ]


def forward_ms_per_token(run_dir: Path, seq_len: int, repeats: int = 5) -> float:
    """Median forward time per token (ms) of the trained model on one random sequence of ``seq_len`` tokens,
    without the LM head (``logits_to_keep=1``: the head costs the same for every b)."""
    model = load(RunDir(run_dir).model).eval()
    ids = torch.randint(model.config.vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        timing = time_call(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), repeats=repeats)
    return 1e3 * timing.median / seq_len


def plot_minibatch(points: list[dict[str, Any]], path: Path) -> None:
    """Validation perplexity vs forward ms/token, one labelled point per mini-batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = [p["forward_ms_per_token"] for p in points]
    y = [p["val_ppl"] for p in points]
    ax.plot(x, y, "o-", color=colour("ttt-linear"), label="TTT-Linear")
    for p in points:
        ax.annotate(f"b={p['mini_batch_size']}", (p["forward_ms_per_token"], p["val_ppl"]), textcoords="offset points",
                    xytext=(5, 5))  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap within one decade
    ax.set_xlabel("forward time per token (ms, log scale)")
    ax.set_ylabel("validation perplexity")
    ax.set_title("Mini-batch size b: perplexity vs forward time")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(results: dict[str, Any], out: Path) -> Path:
    rows = ["| step | val loss | val ppl | Δ ppl vs row above | parameters |", "| --- | --- | --- | --- | --- |"]
    previous = None
    for r in results["ladder"]:
        delta = "" if previous is None else f"{r['val_ppl'] - previous:+.1f}"
        rows.append(f"| {r['label']} | {r['val_loss']:.3f} | {r['val_ppl']:.1f} | {delta} | {r['parameters']:,} |")
        previous = r["val_ppl"]
    sweep = ["| b | val ppl | forward ms / token | tokens/s (training) |", "| --- | --- | --- | --- |"]
    for p in results["minibatch"]:
        sweep.append(
            f"| {p['mini_batch_size']} | {p['val_ppl']:.1f} | {p['forward_ms_per_token']:.3f} | "
            f"{p['tokens_per_s']:,.0f} |"
        )
    setting, sweep_points = results["setting"], results["minibatch"]
    report = out / "report.md"
    report.write_text(
        "# Ablations of the first paper at the tiny budget\n\n"
        f"Every model: preset `tiny` (vocab {setting['vocab_size']}), trained on the default corpus for "
        f"{setting['steps']} steps × 16 × {setting['seq_len']} tokens (the `tttlm demo` recipe, "
        f"seed {setting['seed']}); "
        "validation loss on held-out documents at the end of training.\n\n"
        "## From linear attention to TTT-Linear\n\n"
        "Each row adds one config switch to the row above (`tttlm.ablations.ladder`).\n\n"
        + "\n".join(rows)
        + "\n\n![training curves](training.png)\n\n"
        "## Mini-batch size\n\n"
        f"TTT-Linear (transformer backbone) at b ∈ {{{', '.join(str(p['mini_batch_size']) for p in sweep_points)}}}; "
        f"forward time per token of the trained model on one {setting['timing_seq_len']}-token sequence "
        f"(batch 1, {setting['threads']} torch thread(s), median of 5 after a warm-up, measured in this run on "
        f"{setting['machine']['processor']}; load averages 1/5/15 min "
        f"{'/'.join(f'{x:.1f}' for x in setting['load_average'])}: the machine is shared, compare within the run)"
        ".\n\n" + "\n".join(sweep) + "\n\n![perplexity vs forward time](minibatch.png)\n"
    )
    return report


def run_ablations(
    out: Path | str = Path("runs/ablations"),
    steps: int = 250,
    seq_len: int = 256,
    mini_batch_sizes: Sequence[int] = MINI_BATCH_SIZES,
    timing_seq_len: int = 2048,
    data_dir: Path | str | None = None,
    threads: int = 1,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> Path:
    """Train the ladder and the mini-batch sweep (or continue/reuse their runs), time the sweep, write the report."""
    out = Path(out)
    data = ensure_prepared(data_dir, say=say)
    rungs, sweep = ladder(seq_len), minibatch_sweep(mini_batch_sizes)
    variants: dict[str, Variant] = {}
    for variant in (*rungs, *sweep):
        variants.setdefault(variant.name, variant)  # the sweep's b = 16 is the ladder's row 5
    runs: dict[str, Path] = {}
    for i, variant in enumerate(variants.values(), 1):
        run_dir = out / variant.name
        resume = bool(list_checkpoints(run_dir))
        say(f"[{i}/{len(variants)}] {variant.label} ({'continuing' if resume else 'training'}, {steps} steps)")
        config = demo_config("ttt-linear", run_dir, data, steps, seq_len, variant.overrides)
        config["name"], config["seed"] = f"ablation-{variant.name}", seed
        runs[variant.name] = train(config_from_dict(config), resume=resume)

    torch.set_num_threads(threads)
    say(f"timing the forward pass of the mini-batch sweep ({timing_seq_len} tokens, {threads} thread(s))")
    summaries = {name: run_summary(run_dir) for name, run_dir in runs.items()}
    setting = {"steps": steps, "seq_len": seq_len, "timing_seq_len": timing_seq_len, "threads": threads, "seed": seed}
    setting["vocab_size"] = load(RunDir(runs[rungs[0].name]).model).config.vocab_size
    setting["machine"], setting["load_average"] = machine_info(), os.getloadavg()
    results: dict[str, Any] = {
        "setting": setting,
        "ladder": [{"name": v.name, "label": v.label, **v.overrides, **summaries[v.name]} for v in rungs],
        "minibatch": [
            {
                "name": v.name,
                "mini_batch_size": v.overrides["mini_batch_size"],
                "forward_ms_per_token": forward_ms_per_token(runs[v.name], timing_seq_len),
                **summaries[v.name],
            }
            for v in sweep
        ],
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot_training({v.name: runs[v.name] for v in rungs}, out / "training.png", "Ablation ladder (tiny budget)")
    plot_minibatch(results["minibatch"], out / "minibatch.png")
    return _report(results, out)
