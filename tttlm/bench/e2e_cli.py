"""``tttlm bench e2e``: the argument parser and the command (the measurement is in ``bench/e2e.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tttlm.models.e2e.configuration import META_GRADIENTS
from tttlm.models.ttt.configuration import PRESETS


def _bench_e2e(args: argparse.Namespace) -> int:
    import torch

    from tttlm.bench.e2e import print_table, run_e2e_bench
    from tttlm.bench.records import RecordsFile

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with RecordsFile("e2e", args.json, args.argv) as out:
            records = run_e2e_bench(
                sizes=args.sizes,
                seq=args.seq,
                batch=args.batch,
                window=args.window,
                mini_batch_sizes=args.mini_batch_sizes,
                meta_gradients=args.meta_gradients,
                repeats=args.repeats,
                warmup=args.warmup,
                out=out,
            )
    except ValueError as error:
        print(f"tttlm bench e2e: error: {error}", file=sys.stderr)
        return 2
    print_table(records)
    out.finish()
    return 0


def add_bench_e2e_command(benches: Any) -> None:
    """Add ``e2e`` to the ``tttlm bench`` sub-parsers ``benches``."""
    from tttlm.argtypes import choice_list, int_list

    parser = benches.add_parser(
        "e2e",
        help="training tokens/s of ttt-e2e vs swa at equal size",
        description="Time one training step (forward with the loss + backward) of the sliding-window model and of "
        "TTT-E2E (for each inner mini-batch size b, exact and first-order meta-gradient) at the same size preset "
        "and window, and report tokens/s and the ratio to swa.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/e2e.json"), help="where to write records")
    parser.add_argument("--sizes", type=choice_list(tuple(PRESETS)), default=["tiny", "125m"], help="model presets")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step")
    parser.add_argument("--window", type=int, default=128, help="sliding window k of both models")
    parser.add_argument("--mini-batch-sizes", type=int_list, default=[16, 64], help="ttt-e2e inner mini-batch b")
    parser.add_argument(
        "--meta-gradients", type=choice_list(META_GRADIENTS), default=list(META_GRADIENTS), help="outer gradients"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model, in turns (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.set_defaults(func=_bench_e2e)
