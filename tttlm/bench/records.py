"""Benchmark records on disk: one JSON file per run, with the machine the figures came from and the command."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tttlm.bench.timing import machine_info


def write_records(
    benchmark: str, records: Sequence[dict[str, object]], path: Path, argv: Sequence[str] | None = None
) -> None:
    """Write ``{"benchmark", "argv", "machine", "records"}`` to ``path`` atomically (temp file + rename).

    ``argv``: the ``tttlm`` arguments that produced the records (``tttlm bench report`` prints them as the
    command that reproduces the file); None when the records did not come from the command line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {
        "benchmark": benchmark,
        "argv": None if argv is None else list(argv),
        "machine": machine_info(),
        "records": list(records),
    }
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def save_results(
    benchmark: str,
    records: Sequence[dict[str, object]],
    path: Path,
    argv: Sequence[str] | None,
    plot: Callable[[Sequence[dict[str, object]], Path], object] | None = None,
    figure: Path | None = None,
) -> None:
    """The end of every ``tttlm bench`` command: ``write_records``, then ``plot(records, figure)`` when a figure
    path is given, saying what was written."""
    write_records(benchmark, records, path, argv)
    print(f"wrote {len(records)} records to {path}")
    if plot is not None and figure is not None:
        plot(records, figure)
        print(f"wrote {figure}")


def read_records(path: Path) -> dict[str, Any]:
    """A file written by ``write_records``, checked for the keys every reader relies on."""
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from None
    keys = payload if isinstance(payload, dict) else {}
    missing = [key for key in ("benchmark", "machine", "records") if key not in keys]
    if missing:
        raise ValueError(f"{path}: not a benchmark records file (missing {', '.join(missing)})")
    return payload
