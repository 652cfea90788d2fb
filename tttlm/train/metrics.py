"""Training metrics: one JSON object per line in ``<run>/metrics.jsonl``, and TensorBoard events.

Records carry ``step`` (optimizer steps completed). On resume from step N, records after N are dropped from the JSONL
file and TensorBoard purges its events after N, so the logs of a resumed run read as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tttlm.train.run_dir import RunDir


def read_metrics(run_dir: Path | str) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``."""
    path = RunDir(Path(run_dir)).metrics
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsWriter:
    """Appends records to ``metrics.jsonl`` and TensorBoard (on the main process only; elsewhere a no-op)."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        run = RunDir(Path(run_dir))
        self.path = run.metrics
        self._tb = None
        if not enabled:
            return
        kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step] if resume_step is not None else []
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print(
                    f"tensorboard is not installed: metrics go to {self.path.name} only (pip install tensorboard)",
                    file=sys.stderr,
                )
            else:
                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(str(run.tensorboard), purge_step=purge)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (must have an integer ``step``); numbers also go to TensorBoard as ``<kind>/<key>``."""
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
