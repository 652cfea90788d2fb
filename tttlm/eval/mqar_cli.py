"""``tttlm eval mqar``: the MQAR benchmark (``eval.mqar``, ``eval.mqar_sweep``) over registry archs, with its report.

The learning rates are swept on the first seed; the other seeds run at the best of them (``--lr-on all``: every lr
on every seed). Writes ``runs.jsonl`` (one line per run; a second start resumes), ``command.txt`` (each command that
ran into the directory), ``summary.json``, ``mqar.md`` and ``mqar.png`` (accuracy vs state bytes, one line per arch
and number of pairs, 95% intervals over seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tttlm.argtypes import choice_list, int_list, positive_int, probability

ARGS_FILE = "command.txt"


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 3e-3,1e-2; got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers; got {text!r}")
    return values


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_mqar_command(evals: argparse._SubParsersAction) -> None:
    """Register ``tttlm eval mqar``."""
    from tttlm.models.registry import ARCHS

    mqar = evals.add_parser(
        "mqar",
        help="multi-query associative recall (Zoology's MQAR): train small models of each arch, accuracy vs state",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mqar.add_argument("--archs", type=choice_list(tuple(ARCHS)), required=True, help="registry archs")
    mqar.add_argument("--d-models", type=int_list, default=[64], help="model widths")
    mqar.add_argument("--pairs", type=int_list, default=[8], help="key-value pairs per example")
    mqar.add_argument("--seq-len", type=positive_int, default=64, help="tokens per example")
    mqar.add_argument("--vocab", type=positive_int, default=512, help="vocabulary (keys: lower half, values: upper)")
    mqar.add_argument("--power-a", type=probability, default=0.01, help="power-law exponent of the query gaps")
    mqar.add_argument("--lrs", type=_floats, default=[3e-3, 1e-2], help="AdamW learning rates to sweep")
    mqar.add_argument("--lr-on", choices=("first", "all"), default="first", help="seeds the lr sweep runs on")
    mqar.add_argument("--seeds", type=int_list, default=[1, 2, 3], help="seeds (data order, init, training set)")
    mqar.add_argument("--steps", type=positive_int, default=600, help="training steps at most")
    mqar.add_argument("--batch", type=positive_int, default=32, help="examples per step")
    mqar.add_argument("--eval-every", type=positive_int, default=100, help="steps between test evaluations")
    mqar.add_argument("--train-examples", type=positive_int, default=20_000, help="training examples per seed")
    mqar.add_argument("--test-examples", type=positive_int, default=256, help="held-out examples")
    mqar.add_argument("--layers", type=positive_int, default=2, help="blocks")
    mqar.add_argument("--heads", type=positive_int, default=2, help="heads of the attention/TTT/GDN mixers")
    mqar.add_argument("--window", type=positive_int, default=16, help="window of SWA/hybrid/TTT-KVB/TTT-E2E")
    mqar.add_argument("--no-short-conv", action="store_true", help="no short conv before the mixers")
    mqar.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    mqar.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    mqar.add_argument("--out", type=Path, required=True, help="output directory")
    mqar.set_defaults(func=run_mqar)


def run_mqar(args: argparse.Namespace) -> int:
    import torch

    from tttlm.eval.cli import _device
    from tttlm.eval.mqar import MqarTask, TrainSettings
    from tttlm.eval.mqar_sweep import ModelRecipe, RunSpec, check_archs, read_runs, run_one, summarize, sweep

    torch.set_num_threads(args.threads)
    try:
        tasks = {p: MqarTask(args.vocab, args.seq_len, p, args.power_a) for p in args.pairs}
        recipe = ModelRecipe(args.layers, args.heads, window=args.window, short_conv=not args.no_short_conv)
        check_archs(args.archs, args.d_models, args.vocab, recipe)
        device = _device(args.device)
    except ValueError as error:
        print(f"tttlm eval mqar: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / ARGS_FILE).open("a") as f:  # every command that ran into this directory, in order
        f.write("tttlm " + " ".join(sys.argv[1:]) + "\n")

    def run(spec: RunSpec) -> dict[str, Any]:
        settings = TrainSettings(spec.lr, args.steps, args.batch, eval_every=args.eval_every)
        return run_one(
            spec, tasks[spec.num_pairs], settings, recipe, args.train_examples, args.test_examples, device=device
        )

    cells = [(a, d, p) for p in args.pairs for d in args.d_models for a in args.archs]
    sweep_seeds = args.seeds[:1] if args.lr_on == "first" else args.seeds
    specs = [RunSpec(a, d, p, lr, s) for a, d, p in cells for lr in args.lrs for s in sweep_seeds]
    records = sweep(specs, args.out, run, progress=_log)
    if args.lr_on == "first":
        best = {(r["arch"], r["d_model"], r["num_pairs"]): r["lr"] for r in summarize(records)}
        rest = [RunSpec(a, d, p, best[a, d, p], s) for a, d, p in cells for s in args.seeds[1:]]
        records = sweep(rest, args.out, run, progress=_log)
    write_report(args.out, read_runs(args.out / "runs.jsonl"))
    return 0


def write_report(out: Path, records: list[dict[str, Any]]) -> None:
    """``summary.json``, ``mqar.md`` and ``mqar.png`` of the runs in ``records``."""
    from tttlm.eval.mqar_report import markdown, plot
    from tttlm.eval.mqar_sweep import summarize

    rows = summarize(records)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "mqar.md").write_text(markdown(rows))
    plot(out / "mqar.png", rows)
    print(markdown(rows))
    print(f"wrote {out}/runs.jsonl, summary.json, mqar.md, mqar.png")
