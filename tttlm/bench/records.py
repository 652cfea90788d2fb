"""Benchmark records on disk: one JSON file per run, with the machine the figures came from and the command.

Every ``tttlm bench`` command measures its cases through ``CaseProgress`` into a ``RecordsFile``: after each
finished case the file on disk holds every record measured so far (rewritten atomically), with ``"complete":
false`` until the command has finished, so that a run stopped by Ctrl-C or a kill keeps what it measured. The
progress is a bar on a terminal and one line per finished case (on stderr, so tables on stdout stay clean).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress

from tttlm.bench.timing import machine_info
from tttlm.data.io import write_json_atomic


def write_records(
    benchmark: str,
    records: Sequence[dict[str, object]],
    path: Path,
    argv: Sequence[str] | None = None,
    complete: bool = True,
) -> None:
    """Write ``{"benchmark", "argv", "machine", "complete", "records"}`` to ``path`` atomically (a reader, or a run
    interrupted while writing, finds the old file or the new one, never half of one), with the umask's mode.

    ``argv``: the ``tttlm`` arguments that produced the records (``tttlm bench report`` prints them as the
    command that reproduces the file); None when the records did not come from the command line. ``complete``:
    False while the run is still measuring (or when it was stopped before its last case).
    """
    payload = {
        "benchmark": benchmark,
        "argv": None if argv is None else list(argv),
        "machine": machine_info(),
        "complete": complete,
        "records": list(records),
    }
    write_json_atomic(path, payload)


class RecordsFile:
    """The records file of one run, rewritten after every finished case (``add``).

    Use it as a context manager around the measuring: a run stopped by an exception (Ctrl-C's
    ``KeyboardInterrupt`` included) says what the file kept; ``finish`` marks a finished run complete. Nothing
    is written before the first record, so a command refused for its arguments leaves an earlier file alone.
    """

    def __init__(self, benchmark: str, path: Path, argv: Sequence[str] | None = None) -> None:
        self.benchmark = benchmark
        self.path = path
        self.argv = argv
        self.records: list[dict[str, object]] = []
        self._started = time.perf_counter()

    def add(self, records: Iterable[dict[str, object]]) -> None:
        """Append the JSON records of one finished case and rewrite the file (``complete`` false)."""
        self.records += records
        write_records(self.benchmark, self.records, self.path, self.argv, complete=False)

    def finish(
        self, plot: Callable[[Sequence[dict[str, object]], Path], object] | None = None, figure: Path | None = None
    ) -> None:
        """The end of a finished command: the file marked complete, then ``plot(records, figure)`` when a figure
        path is given, saying what was written."""
        write_records(self.benchmark, self.records, self.path, self.argv)
        print(f"wrote {len(self.records)} records to {self.path} ({self._seconds():.0f} s)")
        if plot is not None and figure is not None:
            plot(self.records, figure)
            print(f"wrote {figure}")

    def __enter__(self) -> RecordsFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None and self.records:
            why = "interrupted" if issubclass(kind, KeyboardInterrupt) else f"stopped by {kind.__name__}"
            print(
                f"{why} after {self._seconds():.0f} s: {self.path} keeps the {len(self.records)} records measured",
                file=sys.stderr,
            )

    def _seconds(self) -> float:
        return time.perf_counter() - self._started


class CaseProgress:
    """The progress of a run over ``total`` cases, each ``start``-ed then ``done``: a bar while a case runs (on
    a terminal) and one line per finished case with its result and seconds; ``done`` hands the case's records
    to ``out`` when given. ``enabled=False``: neither bar nor lines (the records still go to ``out``)."""

    def __init__(self, title: str, total: int, out: RecordsFile | None = None, enabled: bool = True) -> None:
        self._total = total
        self._out = out
        self._finished = 0
        self._description = title
        self._started = time.perf_counter()
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._bar = Progress(console=console, transient=True, disable=not enabled)
        self._task = self._bar.add_task(title, total=total)
        self._enabled = enabled

    def __enter__(self) -> CaseProgress:
        self._bar.start()
        return self

    def __exit__(self, *exception: object) -> None:
        self._bar.stop()

    def start(self, description: str) -> None:
        """A case begins: ``description`` names it on the bar and in its line."""
        self._description = description
        self._started = time.perf_counter()
        self._bar.update(self._task, description=description)

    def done(self, records: Iterable[dict[str, Any]], result: str) -> None:
        """The case begun last has finished with ``records`` (JSON dicts); ``result``: its figure in a few words
        (e.g. "0.12 ms/token", or the reason it was skipped)."""
        seconds = time.perf_counter() - self._started
        if self._out is not None:
            self._out.add(records)
        self._finished += 1
        if self._enabled:
            line = f"[{self._finished}/{self._total}] {self._description}: {result} ({seconds:.1f} s)"
            self._bar.console.print(line, markup=False)
        self._bar.advance(self._task)


def read_records(path: Path) -> dict[str, Any]:
    """A file written by ``write_records``, checked for the keys every reader relies on (files written before
    ``complete`` existed have none: they were written once, at the end of their run)."""
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from None
    keys = payload if isinstance(payload, dict) else {}
    missing = [key for key in ("benchmark", "machine", "records") if key not in keys]
    if missing:
        raise ValueError(f"{path}: not a benchmark records file (missing {', '.join(missing)})")
    return payload
