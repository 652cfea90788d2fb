"""Which files of a ``save_pretrained`` directory hold its weights (safetensors only: pickles are never read)."""

from __future__ import annotations

import json
from pathlib import Path


def safetensors_files(directory: Path) -> list[Path]:
    """The model's safetensors files in ``directory``: those its index names (a sharded save) or
    ``model*.safetensors``; anything else there (tokenizer, README, generation config, optimizer states) is not
    read."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return sorted({directory / name for name in json.loads(index.read_text())["weight_map"].values()})
    return sorted(directory.glob("model*.safetensors"))
