"""``tttlm eval ppl|by-position|niah|mqar``, ``tttlm generate`` and ``tttlm compare``.

Exit status: 0 done; 1 the model gives a non-finite loss (its weights are broken: nothing is written); 2 a bad
checkpoint, data directory, tokenizer or device, or an output directory that cannot be written (the message names
it and the fix); argparse's 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from tttlm.argtypes import int_list, non_negative_float, non_negative_int, positive_int, probability, unit_list
from tttlm.eval.loading import DTYPES

Command = Callable[[argparse.Namespace], int]


def _tasks(text: str) -> list[str]:
    from tttlm.eval.niah import TASKS

    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or any(v not in TASKS for v in values):
        raise argparse.ArgumentTypeError(f"choose from {','.join(TASKS)}; got {text!r}")
    return values


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available (no GPU or no CUDA build of torch); use --device cpu")
    return name


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _setup(args: argparse.Namespace, path: Path):
    """(checkpoint, model, packed held-out split) for one --ckpt; errors are raised, the caller reports them."""
    import torch

    from tttlm.data.packing import PackedDataset
    from tttlm.eval.loading import resolve_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = resolve_checkpoint(path)
    data_dir = ckpt.data_dir(args.data)
    data = PackedDataset(data_dir, args.split)
    has_tokenizer = (ckpt.model_dir / "tokenizer.json").exists()
    if has_tokenizer and not args.allow_other_tokenizer:
        # the vocabulary sizes of two tokenizers can agree while their ids mean other things
        data.check_tokenizer(ckpt.load_tokenizer(), override=", or pass --allow-other-tokenizer to score it anyway")
    elif not has_tokenizer:
        _log(f"note: {ckpt.model_dir} holds no tokenizer, so only the vocabulary size is checked against {data.dir}")
    model = ckpt.load_model(args.dtype, _device(args.device))
    data.check_vocab(model.config.vocab_size)
    return ckpt, model, data


def _reports_errors(name: str) -> Callable[[Command], Command]:
    """Run a command, turning its expected failures into one line on stderr and an exit status (module docstring)."""

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            from tttlm.eval.perplexity import NonFiniteLossError

            try:
                return command(args)
            except NonFiniteLossError as error:
                print(f"tttlm {name}: error: {error}", file=sys.stderr)
                return 1
            except PermissionError as error:
                print(
                    f"tttlm {name}: error: cannot write {error.filename} ({error.strerror}); pass --out with a "
                    "writable directory, or fix its permissions",
                    file=sys.stderr,
                )
                return 2
            except (ValueError, OSError) as error:  # FileNotFoundError, DataMismatchError, CheckpointError, ...
                print(f"tttlm {name}: error: {error}", file=sys.stderr)
                return 2

        return run

    return decorate


@_reports_errors("eval ppl")
def _ppl(args: argparse.Namespace) -> int:
    from tttlm.eval.perplexity import perplexity_vs_context
    from tttlm.eval.report import plot_ppl, ppl_markdown, write_json

    ckpt, model, data = _setup(args, args.ckpt)
    report = perplexity_vs_context(
        model, data, args.contexts, chunk_size=args.chunk, max_documents=args.max_docs, progress=_log
    )
    for skipped in report.skipped:
        _log(f"skipped context {skipped}: no {args.split} document is that long (longest: {report.longest_document})")
    out = args.out or ckpt.eval_dir
    payload = {"name": ckpt.name, "checkpoint": str(ckpt.model_dir), "split": args.split, **report.to_json()}
    write_json(out / "ppl.json", payload)
    results = payload["results"]
    (out / "ppl.md").write_text(ppl_markdown(ckpt.name, results))
    plot_ppl(out / "ppl.png", {ckpt.name: results})
    print(ppl_markdown(ckpt.name, results))
    print(f"wrote {out}/ppl.json, ppl.md, ppl.png")
    return 0


@_reports_errors("eval by-position")
def _by_position(args: argparse.Namespace) -> int:
    from tttlm.eval.perplexity import longest_document, loss_by_position
    from tttlm.eval.report import plot_by_position, write_json, write_position_csv

    curves, names, counts = {}, [], {}
    paths = [*args.ckpt, *([args.ref] if args.ref else [])]
    for n, path in enumerate(paths):
        ckpt, model, data = _setup(args, path)
        length = args.length or min(2048, longest_document(data))
        name = ckpt.name if ckpt.name not in curves else f"{ckpt.name}#{n}"
        _log(f"{name}: loss at each of {length} positions")
        curves[name], counts[name] = loss_by_position(
            model, data, length, chunk_size=args.chunk, max_documents=args.max_docs
        )
        names.append((name, ckpt))
        del model
    ref = names[-1][0] if args.ref else None
    deltas = {name: curves[name] - curves[ref] for name, _ in names[: len(args.ckpt)]} if ref else {}
    shown = {name: curves[name] for name, _ in names}
    out = args.out or names[0][1].eval_dir
    write_position_csv(out / "by_position.csv", shown, deltas)
    plot_by_position(out / "by_position.png", shown, deltas, ref)
    write_json(
        out / "by_position.json",
        {
            "split": args.split,
            "reference": ref,
            "documents": counts,
            "mean_loss": {k: float(v.mean()) for k, v in shown.items()},
        },
    )
    for name, values in shown.items():
        print(f"{name}: mean loss {values.mean():.4f} over {len(values)} positions, {counts[name]} documents")
    print(f"wrote {out}/by_position.csv, by_position.png, by_position.json")
    return 0


@_reports_errors("eval niah")
def _niah(args: argparse.Namespace) -> int:
    import numpy as np

    from tttlm.eval import niah
    from tttlm.eval.perplexity import long_documents
    from tttlm.eval.report import niah_distance_markdown, niah_markdown, plot_niah_heatmaps, write_json

    if args.distance_edges:
        niah.distance_ranges(args.distance_edges)  # checks the edges before any generation
    ckpt, model, data = _setup(args, args.ckpt)
    tokenizer = ckpt.load_tokenizer(ckpt.data_dir(args.data))
    docs = long_documents(data, 1)
    essay = np.concatenate([d for _, d in docs]) if docs else np.zeros(0, dtype=np.int64)
    maker = niah.NiahTaskMaker(tokenizer, essay)
    records = niah.evaluate_niah(
        model,
        maker,
        args.tasks,
        args.lengths,
        samples=args.samples,
        seed=args.seed,
        depths=args.depths,
        chunk_size=args.chunk,
        progress=_log,
    )
    table, intervals = niah.accuracy_table(records), niah.interval_table(records)
    out = args.out or ckpt.eval_dir
    payload = {"name": ckpt.name, "split": args.split, "accuracy": table, "intervals": intervals}
    markdown = niah_markdown({ckpt.name: table}, {ckpt.name: intervals})
    if args.distance_edges:
        payload["by_distance"] = niah.distance_table(records, args.distance_edges)
        markdown += "\n\n" + niah_distance_markdown(payload["by_distance"])
    write_json(out / "niah.json", {**payload, "records": records})
    (out / "niah.md").write_text(markdown)
    plot_niah_heatmaps(out / "niah.png", {t: niah.depth_grid(records, t) for t in args.tasks})
    print(markdown)
    print(f"wrote {out}/niah.json, niah.md, niah.png")
    return 0


@_reports_errors("generate")
def _generate(args: argparse.Namespace) -> int:
    from tttlm.eval.generate import generate_tokens, make_sampler
    from tttlm.eval.loading import resolve_checkpoint

    ckpt = resolve_checkpoint(args.ckpt)
    tokenizer = ckpt.load_tokenizer(ckpt.data_dir(args.data) if args.data else None)
    model = ckpt.load_model(args.dtype, _device(args.device))
    sampler = make_sampler(args.temperature, args.top_k, args.top_p, args.seed)
    ids = tokenizer(args.prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("the prompt is empty; give text that encodes to at least one token")
    new: list[int] = []
    shown = ""
    print(args.prompt, end="", flush=True)

    def show(token: int) -> None:
        # decode everything so far and print what is new: a character may span several byte-level tokens
        nonlocal shown
        new.append(token)
        text = tokenizer.decode(new)
        if not text.endswith("\ufffd"):
            print(text[len(shown) :], end="", flush=True)
            shown = text

    stop = [] if args.no_stop or tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    generate_tokens(
        model, ids, args.max_new_tokens, chunk_size=args.chunk, sampler=sampler, stop_ids=stop, on_token=show
    )
    print(tokenizer.decode(new)[len(shown) :])
    return 0


@_reports_errors("compare")
def _compare(args: argparse.Namespace) -> int:
    from tttlm.eval.compare import write_comparison

    path = write_comparison(args.runs, args.out, args.ref)
    print(f"wrote {path}")
    return 0


def _common(parser: argparse.ArgumentParser, *, data: bool = True) -> None:
    if data:
        parser.add_argument("--data", type=Path, help="prepared data directory (default: the run's, else the default)")
        parser.add_argument("--split", choices=("val", "test"), default="val", help="held-out split")
        parser.add_argument("--max-docs", type=positive_int, default=16, help="documents per context length at most")
        parser.add_argument(
            "--allow-other-tokenizer",
            action="store_true",
            help="score data packed with another tokenizer than the model's (normally refused: the ids differ)",
        )
    parser.add_argument("--chunk", type=positive_int, default=2048, help="tokens per forward call when streaming")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="model dtype")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: PyTorch's default)")


def add_eval_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``tttlm eval``, ``tttlm generate`` and ``tttlm compare`` on the top-level sub-command parser."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    evaluate = commands.add_parser("eval", help="evaluate a checkpoint: perplexity, loss by position, S-NIAH")
    evals = evaluate.add_subparsers(dest="eval", required=True, metavar="EVAL")

    from tttlm.eval.harness import add_harness_command

    add_harness_command(evals)
    from tttlm.eval.mqar_cli import add_mqar_command

    add_mqar_command(evals)
    ppl = evals.add_parser(
        "ppl",
        help="perplexity at several context lengths on long held-out documents",
        description="For each context length L: the documents with >= L tokens, each read as [eos] + its first "
        "L - 1 tokens in streaming chunks (cache carried), mean loss over the L predictions. Writes ppl.json, "
        "ppl.md and ppl.png to --out (default: <run>/eval).",
        formatter_class=fmt,
    )
    ppl.add_argument("--ckpt", type=Path, required=True, help="run directory or model directory")
    ppl.add_argument("--contexts", type=int_list, default=[512, 2048, 8192, 32768], help="context lengths")
    ppl.add_argument("--out", type=Path, help="output directory")
    _common(ppl)
    ppl.set_defaults(func=_ppl)

    position = evals.add_parser(
        "by-position",
        help="mean loss at each token index (log-x plot), several checkpoints, optional reference",
        description="Mean loss at each token index over held-out documents with >= --length tokens; with --ref also "
        "loss - reference loss. Writes by_position.csv/.png/.json to --out (default: the first run's eval/).",
        formatter_class=fmt,
    )
    position.add_argument("--ckpt", type=Path, action="append", required=True, help="checkpoint (repeatable)")
    position.add_argument("--ref", type=Path, help="reference checkpoint for the loss difference")
    position.add_argument(
        "--length", type=non_negative_int, default=0, help="positions (0: min(2048, longest document))"
    )
    position.add_argument("--out", type=Path, help="output directory")
    _common(position)
    position.set_defaults(func=_by_position)

    niah = evals.add_parser(
        "niah",
        help="single-needle-in-a-haystack as RULER defines it (S-NIAH-1/2/3), greedy, RULER's string_match_all",
        description="S-NIAH-1 (number in RULER's noise, one copy per line), S-NIAH-2 (number in an essay haystack: "
        "the --split documents, by default the test split), S-NIAH-3 (UUID in the essay), --samples per (task, "
        "length) at random depths, 128 generated tokens counted in the length, scored by RULER's string_match_all "
        "(case-insensitive substring) with 95%% Wilson intervals. Writes niah.json, niah.md (methods x tasks x "
        "lengths) and niah.png (depth x length heatmaps) to --out (default: <run>/eval). Lengths up to 131072 "
        "work; the defaults suit a CPU.",
        formatter_class=fmt,
    )
    niah.add_argument("--ckpt", type=Path, required=True, help="run directory or model directory")
    niah.add_argument("--tasks", type=_tasks, default=["s-niah-1", "s-niah-2", "s-niah-3"], help="tasks")
    niah.add_argument(
        "--lengths", type=int_list, default=[512, 1024, 2048], help="context lengths (prompt + generated tokens)"
    )
    niah.add_argument(
        "--samples", type=positive_int, default=20, help="samples per (task, length), or per depth with --depths"
    )
    niah.add_argument(
        "--depths",
        type=unit_list,
        help="put the needle at these depths of the haystack (fractions, e.g. 0,0.5,1), --samples at each, instead "
        "of at random depths (RULER)",
    )
    niah.add_argument("--seed", type=int, default=0, help="task generator seed")
    niah.add_argument(
        "--distance-edges",
        type=int_list,
        default=[],
        help="also split the accuracy by the needle's distance from the end of the prompt at these token counts, "
        "e.g. 64,128 for a sliding window of 64 in two layers (ascending)",
    )
    niah.add_argument("--out", type=Path, help="output directory")
    _common(niah)
    niah.set_defaults(split="test")  # the essay haystack: documents no model trained or validated on
    niah.set_defaults(func=_niah)

    generate = commands.add_parser(
        "generate",
        help="generate text from a checkpoint, streaming it to the terminal",
        description="Prefill the prompt (chunked, cache carried), then sample token by token.",
        formatter_class=fmt,
    )
    generate.add_argument("--ckpt", type=Path, required=True, help="run directory or model directory")
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument("--max-new-tokens", type=positive_int, default=100, help="tokens to generate at most")
    generate.add_argument(
        "--temperature", type=non_negative_float, default=0.8, help="sampling temperature (0: greedy)"
    )
    generate.add_argument(
        "--top-k", type=non_negative_int, default=0, help="sample from the k most likely tokens (0: all)"
    )
    generate.add_argument("--top-p", type=probability, default=1.0, help="nucleus sampling mass, in (0, 1]")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed")
    generate.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-text token")
    generate.add_argument("--data", type=Path, help="data directory whose tokenizer to use if the model has none")
    _common(generate, data=False)
    generate.set_defaults(func=_generate)

    compare = commands.add_parser(
        "compare",
        help="one Markdown report (with PNGs) comparing runs: training curves, ppl, loss by position, NIAH",
        description="Reads each run's metrics.jsonl and eval/ results (whatever exists) and writes report.md with "
        "embedded plots.",
        formatter_class=fmt,
    )
    compare.add_argument("runs", type=Path, nargs="+", help="run directories")
    compare.add_argument("--out", type=Path, default=Path("compare"), help="output directory")
    compare.add_argument(
        "--ref", type=Path, help="one of the runs: also plot and tabulate every run's loss by position minus its"
    )
    compare.set_defaults(func=_compare)
