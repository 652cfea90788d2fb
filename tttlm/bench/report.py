"""``tttlm bench report``: docs/BENCHMARKS.md regenerated from the JSON records in docs/results/bench.

The document is a pure function of the files in the results directory, so it cannot drift from them:

- ``notes/_intro.md``: the top of the document (title, general remarks);
- ``notes/_<benchmark>.md``: the heading and prose that open a benchmark's files (e.g. ``_prefill.md``), if any;
- for every ``<name>.json`` (ordered by benchmark: forms, reference, prefill, decode, train, e2e, memory, kernels,
  roofline, then any other; by file name within one), a section: ``notes/<name>.md`` if it exists (hand-written
  prose; the line ``{{results}}`` marks where the generated part goes), else a heading naming the file; the generated
  part is the command that reproduces the file (its stored ``argv``), the machine facts, a warning when the file is
  partial (its run was stopped: ``"complete": false``), the benchmark's tables (a generic table of the records for a
  benchmark without its own) and ``<name>.png`` when it exists beside the JSON.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tttlm.bench.records import read_records
from tttlm.bench.tables import Record, TextTable, generic_table, markdown, skipped_lines

ORDER = ("forms", "reference", "prefill", "decode", "train", "e2e", "memory", "kernels", "roofline")
PLACEHOLDER = "{{results}}"
DEFAULT_RESULTS = Path("docs/results/bench")
DEFAULT_OUT = Path("docs/BENCHMARKS.md")


def _tables_for(benchmark: str) -> Callable[[Sequence[Record]], list[TextTable]] | None:
    """The benchmark's own table builder, or None (then the records are shown as a generic table)."""
    if benchmark == "forms":
        from tttlm.bench.forms import tables
    elif benchmark == "prefill":
        from tttlm.bench.prefill import tables
    elif benchmark == "decode":
        from tttlm.bench.decode import tables
    elif benchmark == "train":
        from tttlm.bench.train import tables
    elif benchmark == "reference":
        from tttlm.bench.reference import tables
    elif benchmark == "roofline":
        from tttlm.bench.roofline import tables
    elif benchmark == "memory":
        from tttlm.bench.memory import tables
    else:
        return None
    return tables


def machine_line(machine: dict[str, Any], records: Sequence[Record]) -> str:
    """The machine facts of a records file in one sentence (fields missing from older files are left out)."""
    threads = machine.get("torch_threads")
    parts = [
        f"{machine.get('processor', '?')}, {machine.get('cpu_count', '?')} CPUs",
        f"device {machine.get('device', '?')}",
        str(machine.get("platform", "?")),
        f"Python {machine.get('python', '?')}",
    ]
    parts += [f"{lib} {machine[lib]}" for lib in ("torch", "transformers", "triton") if machine.get(lib)]
    if threads is not None:
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''} in the writing process")
    text = "Machine: " + ", ".join(parts) + "."
    loads = [r["load_1m"] for r in records if isinstance(r.get("load_1m"), (int, float))]
    if loads:
        text += f" Load average (1 min) during the cases: {min(loads):.2f}–{max(loads):.2f}."
    if machine.get("load_average"):
        one, five, fifteen = machine["load_average"]
        text += f" Load average when the file was written: {one} / {five} / {fifteen} (1 / 5 / 15 min)."
    return text


def results_block(path: Path, payload: dict[str, Any], out: Path) -> str:
    """The generated part of one file's section: command, machine, tables, figure."""
    records = payload["records"]
    lines = []
    argv = payload.get("argv")
    if argv:
        lines += [f"Command (writes `{path.name}`):", "", "```", "tttlm " + shlex.join(argv), "```", ""]
    lines += [machine_line(payload["machine"], records), ""]
    if payload.get("complete") is False:  # files from before the flag were written once, finished
        count = f"{len(records)} record{'s' if len(records) != 1 else ''}"
        lines += [f"Partial: the run stopped before its last case ({count} here).", ""]
    builder = _tables_for(payload["benchmark"])
    tables = builder(records) if builder else [generic_table(f"{payload['benchmark']} records", records)]
    for table in tables:
        lines += [markdown(table), ""]
    skipped = skipped_lines(records)
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped) + ".", ""]
    figure = path.with_suffix(".png")
    if figure.exists():
        relative = Path(os.path.relpath(figure, out.parent)).as_posix()
        lines += [f"![{path.stem}]({relative})", ""]
    return "\n".join(lines).rstrip("\n")


def _order(path: Path, benchmark: str) -> tuple[int, str, str]:
    rank = ORDER.index(benchmark) if benchmark in ORDER else len(ORDER)
    return rank, benchmark, path.stem  # the stem: "x.json" before "x-more.json"


def render(results: Path = DEFAULT_RESULTS, out: Path = DEFAULT_OUT) -> str:
    """The whole document for the records in ``results`` (``out`` is only used to make figure links relative)."""
    if not results.is_dir():
        raise ValueError(f"results directory {results} does not exist")
    notes = results / "notes"
    files = [(path, read_records(path)) for path in results.glob("*.json")]
    files.sort(key=lambda item: _order(item[0], item[1]["benchmark"]))
    intro = notes / "_intro.md"
    parts = [intro.read_text().strip() if intro.exists() else "# Benchmarks"]
    parts.append(
        f"<!-- Generated by `tttlm bench report` from {results.as_posix()}/*.json: edit the notes in "
        f"{notes.as_posix()}/, not this file. -->"
    )
    opened = set()
    for path, payload in files:
        benchmark = payload["benchmark"]
        opening = notes / f"_{benchmark}.md"
        if benchmark not in opened and opening.exists():
            parts.append(opening.read_text().strip())
        opened.add(benchmark)
        block = results_block(path, payload, out)
        note = notes / f"{path.stem}.md"
        default = f"## {payload['benchmark']}: `{path.name}`\n\n{PLACEHOLDER}"
        template = note.read_text().strip() if note.exists() else default
        if PLACEHOLDER not in template:
            raise ValueError(f"{note}: the notes of a results file must contain the line {PLACEHOLDER}")
        parts.append(template.replace(PLACEHOLDER, block))
    return "\n\n".join(parts) + "\n"


def _bench_report(args: argparse.Namespace) -> int:
    try:
        text = render(args.results, args.out)
    except ValueError as error:
        print(f"tttlm bench report: error: {error}", file=sys.stderr)
        return 2
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run tttlm bench report", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


def add_bench_report_command(benches: Any) -> None:
    """Register ``tttlm bench report`` on the ``bench`` sub-parsers."""
    parser = benches.add_parser(
        "report",
        help="regenerate docs/BENCHMARKS.md from the JSON records (and figures, notes) in docs/results/bench",
        description="Write the benchmarks document from every *.json in the results directory: per file the "
        "command that reproduces it, the machine facts, its tables and its PNG, inside the prose of "
        "notes/<file>.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="directory of the JSON records")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the document to write")
    parser.add_argument("--check", action="store_true", help="do not write: exit 1 if the document is out of date")
    parser.set_defaults(func=_bench_report)
