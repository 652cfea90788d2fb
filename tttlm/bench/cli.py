"""``tttlm bench``: one sub-command per benchmark, each registered by the module that measures it."""

from __future__ import annotations

import argparse

from tttlm.bench.decode import add_bench_decode_command
from tttlm.bench.e2e_cli import add_bench_e2e_command
from tttlm.bench.forms import add_bench_forms_command
from tttlm.bench.kernels import add_bench_kernels_command
from tttlm.bench.memory import add_bench_memory_command
from tttlm.bench.prefill import add_bench_prefill_command
from tttlm.bench.reference import add_bench_reference_command
from tttlm.bench.report import add_bench_report_command
from tttlm.bench.roofline import add_bench_roofline_command
from tttlm.bench.train import add_bench_train_command


def add_bench_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``tttlm bench`` and its benchmarks on the top-level sub-parsers."""
    bench = commands.add_parser("bench", help="speed benchmarks (print a table, write JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    add_bench_forms_command(benches)
    add_bench_prefill_command(benches)
    add_bench_decode_command(benches)
    add_bench_e2e_command(benches)
    add_bench_kernels_command(benches)
    add_bench_memory_command(benches)
    add_bench_roofline_command(benches)
    add_bench_reference_command(benches)
    add_bench_report_command(benches)
    add_bench_train_command(benches)
