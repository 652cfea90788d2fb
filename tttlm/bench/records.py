"""Benchmark records on disk: one JSON file per run, with the machine the figures came from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tttlm.bench.timing import machine_info


def write_records(benchmark: str, records: Sequence[dict[str, object]], path: Path) -> None:
    """Write ``{"benchmark", "machine", "records"}`` to ``path`` atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"benchmark": benchmark, "machine": machine_info(), "records": list(records)}
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)
