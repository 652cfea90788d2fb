"""The datasets of tttlm's own lm-eval-harness tasks (``!function tasks.…`` in the YAML files beside this one),
read from the JSONL files here, so that the tasks run offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

HERE = Path(__file__).parent


def _split(name: str) -> datasets.DatasetDict:
    rows = [json.loads(line) for line in (HERE / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def cloze(**_: Any) -> datasets.DatasetDict:
    """Multiple choice: a context and four continuations, the first one right (``cloze.jsonl``)."""
    return _split("cloze.jsonl")


def continuation(**_: Any) -> datasets.DatasetDict:
    """Short generation: a prompt and the word that comes next (``continue.jsonl``)."""
    return _split("continue.jsonl")
