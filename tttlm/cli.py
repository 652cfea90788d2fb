"""The ``tttlm`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import tttlm
from tttlm.argtypes import choice_list, int_list
from tttlm.models.convert import DTYPES
from tttlm.models.e2e.release import RELEASE_SIZES


def _convert(args: argparse.Namespace) -> int:
    from tttlm.data.io import apply_umask_below
    from tttlm.models.convert import convert_checkpoint

    try:
        model = convert_checkpoint(args.source, config=args.config, preset=args.preset, dtype=args.dtype)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"tttlm convert: error: {error}", file=sys.stderr)
        return 2
    model.save_pretrained(args.output)
    apply_umask_below(args.output)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"converted {args.source} -> {args.output} ({type(model).__name__}, {parameters:,} parameters, {args.dtype})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tttlm.data.fetch import FetchError
    from tttlm.demo import QUICK, run_demo

    steps, seq_len = (QUICK["steps"], QUICK["seq_len"]) if args.quick else (args.steps, args.seq_len)
    try:
        report = run_demo(args.out, args.archs, steps=steps, seq_len=seq_len, data_dir=args.data)
    except FetchError as error:
        print(f"tttlm demo: error: {error}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


def _ablations(args: argparse.Namespace) -> int:
    from tttlm.ablations import run_ablations

    report = run_ablations(
        args.out, steps=args.steps, seq_len=args.seq_len, mini_batch_sizes=args.mini_batch_sizes,
        timing_seq_len=args.timing_seq_len, data_dir=args.data, threads=args.threads, seed=args.seed,
    )  # fmt: skip
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tttlm.models import ARCHS

    parser = argparse.ArgumentParser(prog="tttlm", description="Test-Time-Training sequence models.")
    parser.add_argument("--version", action="version", version=f"tttlm {tttlm.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from tttlm.bench.cli import add_bench_commands

    add_bench_commands(commands)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on the default corpus: data, tokenizer, two tiny models, evaluation, report",
        description="Prepare the default corpus (downloaded once), train a tiny TTT-Linear and a tiny Transformer "
        "on it for the same budget, evaluate them and write report.md with a plot. Re-running continues an "
        "interrupted demo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the runs and the report go")
    demo.add_argument("--archs", type=choice_list(ARCHS), default=["ttt-linear", "transformer"], help="models")
    demo.add_argument("--steps", type=int, default=250, help="optimizer steps per model (16 sequences each)")
    demo.add_argument("--seq-len", type=int, default=256, help="training context length")
    demo.add_argument("--data", type=Path, default=None, help="prepared data directory (default: the cache's)")
    demo.add_argument("--quick", action="store_true", help="a short run of the same pipeline (CI's smoke test)")
    demo.set_defaults(func=_demo)

    ablations = commands.add_parser(
        "ablations",
        help="the first paper's ablations: linear attention -> TTT-Linear ladder and the mini-batch size trade-off",
        description="Train the ladder from linear attention to TTT-Linear (one config switch per step) and TTT-Linear "
        "at several mini-batch sizes, all at the demo's tiny budget; write report.md with the validation perplexity "
        "table and the perplexity vs forward time plot. Re-running continues interrupted runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ablations.add_argument("--out", type=Path, default=Path("runs/ablations"), help="runs and report directory")
    ablations.add_argument("--steps", type=int, default=250, help="optimizer steps per model (16 sequences each)")
    ablations.add_argument("--seq-len", type=int, default=256, help="training context length")
    ablations.add_argument("--mini-batch-sizes", type=int_list, default=[1, 4, 16, 64], help="TTT-Linear b sweep")
    ablations.add_argument("--timing-seq-len", type=int, default=2048, help="tokens of the forward-time measurement")
    ablations.add_argument("--threads", type=int, default=1, help="torch threads for the timing")
    ablations.add_argument("--seed", type=int, default=0, help="training seed of every model (another seed: --out)")
    ablations.add_argument("--data", type=Path, default=None, help="prepared data directory (default: the cache's)")
    ablations.set_defaults(func=_ablations)

    convert = commands.add_parser(
        "convert",
        help="convert a ttt-lm-pytorch or a TTT-E2E release checkpoint into a tttlm model directory",
        description="Detects the format: a ttt-lm-pytorch directory (config.json + *.safetensors) or a TTT-E2E "
        "release checkpoint (an orbax run directory, one <step>/ of it or its model_weights; only model_weights is "
        "read, with tensorstore: pip install 'tttlm[orbax]'). Writes a model directory (save_pretrained, "
        "safetensors) that AutoModelForCausalLM.from_pretrained loads and that gives the same logits.",
    )
    convert.add_argument("source", type=Path, help="checkpoint directory")
    convert.add_argument("output", type=Path, help="where to write the tttlm model")
    convert.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TTT-E2E release only: the run's configuration (its composed Hydra config.yaml, or JSON/YAML with its "
        "model and training sections)",
    )
    convert.add_argument(
        "--preset",
        choices=RELEASE_SIZES,
        default=None,
        help="TTT-E2E release only: the configuration of a released size, instead of --config",
    )
    convert.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="dtype of the written weights, whatever the checkpoint stores (default float32)",
    )
    convert.set_defaults(func=_convert)

    from tttlm.data.cli import add_data_command
    from tttlm.eval.cli import add_eval_commands
    from tttlm.experiments.cli import add_experiment_command
    from tttlm.models.cli import add_models_command
    from tttlm.models.e2e.cli import add_e2e_init_command
    from tttlm.train.cli import add_train_command

    add_data_command(commands)
    add_models_command(commands)
    add_train_command(commands)
    add_eval_commands(commands)
    add_experiment_command(commands)
    add_e2e_init_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tttlm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # benchmarks store the command that produced their records
    positive = ("batch", "heads", "head_dim", "repeats", "tokens", "prefill_chunk", "steps", "seq_len")
    positive += ("timing_seq_len",)
    for name in positive:
        if getattr(args, name, 1) < 1:
            print(f"tttlm: error: --{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}", file=sys.stderr)
            return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
