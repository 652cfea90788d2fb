"""Tables of benchmark records as plain text cells, printed to the console (rich) or written as Markdown.

Each benchmark turns its JSON records into ``TextTable``s once; ``tttlm bench <name>`` prints them and
``tttlm bench report`` writes the same tables into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

Record = dict[str, Any]


@dataclass
class TextTable:
    """A titled table of strings; the first ``left`` columns are labels (left-aligned), the rest numbers."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: int = 1


def wide_console() -> Console:
    """The terminal's console, or one 200 columns wide when writing to a file or pipe (rich would assume 80 and
    cut the cells of wide tables)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def print_tables(tables: Iterable[TextTable], console: Console | None = None) -> None:
    console = console or wide_console()
    for text in tables:
        table = Table(title=text.title)
        for i, header in enumerate(text.headers):
            table.add_column(header, justify="left" if i < text.left else "right")
        for row in text.rows:
            table.add_row(*row)
        console.print(table)


def markdown(table: TextTable) -> str:
    """The table in GitHub Markdown, its title as a bold line above it."""
    lines = [f"**{table.title}**", "", _markdown_row(table.headers)]
    lines.append("| " + " | ".join("---" if i < table.left else "---:" for i in range(len(table.headers))) + " |")
    lines += [_markdown_row(row) for row in table.rows]
    return "\n".join(lines)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def fmt(value: Any, spec: str = ".3g", missing: str = "-") -> str:
    """``value`` formatted with ``spec``, or ``missing`` for None."""
    return missing if value is None else format(value, spec)


def si(value: float | None, unit: str = "") -> str:
    """A count with an SI prefix and 3 significant digits (``1.23 G``), "-" for None."""
    if value is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def spread(median: float | None, low: float, high: float) -> str:
    """ "median (low–high)" with 3 significant digits; the median alone when there was one sample; "skipped" for
    None."""
    if median is None:
        return "skipped"
    return f"{median:.3g}" if low == high else f"{median:.3g} ({low:.3g}–{high:.3g})"


def context_label(tokens: int) -> str:
    """512 → "512", 4096 → "4K", 1536 → "1.5K"."""
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else (f"{tokens / 1024:g}K" if tokens > 1024 else str(tokens))


def pivot(
    title: str,
    records: Sequence[Record],
    row_key: Callable[[Record], str],
    column_key: str,
    cell: Callable[[Record], str],
    row_header: str = "model",
    extra: Sequence[tuple[str, Callable[[list[Record]], str]]] = (),
) -> TextTable:
    """One row per ``row_key`` (in order of appearance), one column per value of ``record[column_key]`` (sorted,
    shown with ``context_label``), ``cell(record)`` at their crossing; ``extra`` columns get a row's records."""
    columns = sorted({r[column_key] for r in records})
    rows: dict[str, dict[Any, Record]] = {}
    for r in records:
        rows.setdefault(row_key(r), {})[r[column_key]] = r
    table = TextTable(title, [row_header, *map(context_label, columns), *(name for name, _ in extra)])
    for name, by_column in rows.items():
        cells = [cell(by_column[c]) if c in by_column else "-" for c in columns]
        ordered = [by_column[c] for c in columns if c in by_column]
        table.rows.append([name, *cells, *(fn(ordered) for _, fn in extra)])
    return table


def skipped_lines(records: Sequence[Record]) -> list[str]:
    """One line per distinct reason a case was skipped, with how many were: "10 cases: needs CUDA"."""
    reasons: dict[str, int] = {}
    for r in records:
        if r.get("skipped"):
            reasons[r["skipped"]] = reasons.get(r["skipped"], 0) + 1
    return [f"{count} case{'s' if count > 1 else ''}: {reason}" for reason, count in reasons.items()]


def generic_table(title: str, records: Sequence[Record]) -> TextTable:
    """Every record as a row, every key that is set in some record as a column (for benchmarks without a table
    of their own)."""
    keys = list(dict.fromkeys(k for r in records for k in r if r[k] is not None))
    table = TextTable(title, keys, left=0)
    for r in records:
        table.rows.append([_generic_cell(r.get(k)) for k in keys])
    return table


def _generic_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
