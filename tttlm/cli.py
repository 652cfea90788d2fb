"""The ``tttlm`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import tttlm


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 512,2048; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers; got {text!r}")
    return values


def _choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in values if x not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return values

    return parse


def _bench_forms(args: argparse.Namespace) -> int:
    import torch

    from tttlm.bench.forms import FormsSetting, print_table, run_forms_bench
    from tttlm.bench.records import RecordsFile

    if args.threads:
        torch.set_num_threads(args.threads)
    setting = FormsSetting(batch=args.batch, heads=args.heads, head_dim=args.head_dim)
    with RecordsFile("forms", args.json, args.argv) as out:
        records = run_forms_bench(
            seqs=args.seqs,
            mini_batch_sizes=args.mini_batch_sizes,
            ops=args.ops,
            passes=args.passes,
            setting=setting,
            repeats=args.repeats,
            warmup=args.warmup,
            max_naive_gb=args.max_naive_gb,
            out=out,
        )
    print_table(records)
    out.finish()
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tttlm.data.io import apply_umask_below
    from tttlm.models.ttt.convert import load_reference

    try:
        model = load_reference(args.source)
    except (FileNotFoundError, ValueError) as error:
        print(f"tttlm convert: error: {error}", file=sys.stderr)
        return 2
    model.save_pretrained(args.output)
    apply_umask_below(args.output)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"converted {args.source} -> {args.output} ({parameters:,} parameters, {model.config.layer_type}, "
        f"{model.config.backbone} backbone)"
    )
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    from tttlm.bench.records import RecordsFile
    from tttlm.bench.tables import print_tables
    from tttlm.bench.train import plot, run_train_bench, tables

    with RecordsFile("train", args.json, args.argv) as out:
        run_train_bench(
            args.archs, args.sizes, args.seq_len, args.batch, args.steps, args.threads, not args.in_process, out
        )
    print_tables(tables(out.records))
    out.finish(plot, args.plot)
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
    from tttlm.bench.forms import OPS, PASSES, FormsSetting
    from tttlm.models import ARCHS
    from tttlm.models.ttt.configuration import PRESETS

    parser = argparse.ArgumentParser(prog="tttlm", description="Test-Time-Training sequence models.")
    parser.add_argument("--version", action="version", version=f"tttlm {tttlm.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="speed benchmarks (print a table, write JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    forms = benches.add_parser(
        "forms",
        help="primal (naive) vs dual form of the TTT ops, forward and forward+backward",
        description="Time the naive (primal) and dual forms of ttt_linear and ttt_mlp and report the speed-up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    forms.add_argument("--json", type=Path, default=Path("bench-results/forms.json"), help="where to write records")
    forms.add_argument("--seqs", type=_int_list, default=[512, 2048, 8192], help="sequence lengths T")
    forms.add_argument("--mini-batch-sizes", type=_int_list, default=[1, 4, 16, 64], help="TTT mini-batch sizes b")
    forms.add_argument("--ops", type=_choice_list(OPS), default=list(OPS), help="ops to time")
    forms.add_argument("--passes", type=_choice_list(PASSES), default=list(PASSES), help="passes to time")
    forms.add_argument("--batch", type=int, default=1, help="batch size")
    forms.add_argument("--heads", type=int, default=FormsSetting.heads, help="number of heads")
    forms.add_argument("--head-dim", type=int, default=64, help="head dimension d")
    forms.add_argument("--repeats", type=int, default=3, help="timed calls per case (the median is reported)")
    forms.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    forms.add_argument(
        "--max-naive-gb", type=float, default=12.0, help="skip naive fwd+bwd cases estimated to need more memory"
    )
    forms.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    forms.set_defaults(func=_bench_forms)

    from tttlm.bench.decode import add_bench_decode_command
    from tttlm.bench.prefill import add_bench_prefill_command
    from tttlm.bench.report import add_bench_report_command

    add_bench_prefill_command(benches)
    add_bench_decode_command(benches)

    from tttlm.bench.e2e_cli import add_bench_e2e_command
    from tttlm.bench.kernels import add_bench_kernels_command
    from tttlm.bench.roofline import add_bench_roofline_command

    add_bench_e2e_command(benches)
    add_bench_kernels_command(benches)
    add_bench_roofline_command(benches)
    add_bench_report_command(benches)

    train_bench = benches.add_parser(
        "train",
        help="training tokens/s and peak memory of registry models",
        description="Time forward+backward+AdamW steps on random tokens, each model in a fresh process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train_bench.add_argument("--json", type=Path, default=Path("bench-results/train.json"), help="records file")
    train_bench.add_argument("--plot", type=Path, default=None, help="PNG: tokens/s per arch and size")
    train_bench.add_argument(
        "--archs", type=_choice_list(ARCHS), default=["ttt-linear", "ttt-mlp", "transformer"], help="models"
    )
    train_bench.add_argument("--sizes", type=_choice_list(tuple(PRESETS)), default=["tiny", "125m"], help="presets")
    train_bench.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    train_bench.add_argument("--batch", type=int, default=1, help="sequences per step")
    train_bench.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    train_bench.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    train_bench.add_argument(
        "--in-process", action="store_true", help="measure in this process (faster start; peak memory is cumulative)"
    )
    train_bench.set_defaults(func=_bench_train)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on the default corpus: data, tokenizer, two tiny models, evaluation, report",
        description="Prepare the default corpus (downloaded once), train a tiny TTT-Linear and a tiny Transformer "
        "on it for the same budget, evaluate them and write report.md with a plot. Re-running continues an "
        "interrupted demo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the runs and the report go")
    demo.add_argument("--archs", type=_choice_list(ARCHS), default=["ttt-linear", "transformer"], help="models")
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
    ablations.add_argument("--mini-batch-sizes", type=_int_list, default=[1, 4, 16, 64], help="TTT-Linear b sweep")
    ablations.add_argument("--timing-seq-len", type=int, default=2048, help="tokens of the forward-time measurement")
    ablations.add_argument("--threads", type=int, default=1, help="torch threads for the timing")
    ablations.add_argument("--seed", type=int, default=0, help="training seed of every model (another seed: --out)")
    ablations.add_argument("--data", type=Path, default=None, help="prepared data directory (default: the cache's)")
    ablations.set_defaults(func=_ablations)

    convert = commands.add_parser(
        "convert",
        help="convert a reference (ttt-lm-pytorch) checkpoint into a tttlm model directory",
        description="Read config.json + *.safetensors saved by the reference TTTForCausalLM and write a tttlm "
        "model directory (save_pretrained, safetensors) that gives the same logits.",
    )
    convert.add_argument("source", type=Path, help="reference checkpoint directory")
    convert.add_argument("output", type=Path, help="where to write the tttlm model")
    convert.set_defaults(func=_convert)

    from tttlm.data.cli import add_data_command
    from tttlm.eval.cli import add_eval_commands
    from tttlm.models.cli import add_models_command
    from tttlm.train.cli import add_train_command

    add_data_command(commands)
    add_models_command(commands)
    add_train_command(commands)
    add_eval_commands(commands)
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
