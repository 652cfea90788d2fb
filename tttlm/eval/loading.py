"""Loading what an evaluation needs from one ``--ckpt`` path: the model, its tokenizer, the data and output directories.

``--ckpt`` may be a run directory (``tttlm.train.run_dir``: ``runs/<name>/`` with ``model/``, ``config.yaml``,
``metrics.jsonl``) or a model directory (``save_pretrained`` output, e.g. ``runs/<name>/model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tttlm.train.run_dir import RunDir

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters, where its inputs must go (CPU for a model without parameters)."""
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class CheckpointError(ValueError):
    """A ``--ckpt`` path that is not a run or model directory, or that does not match the data."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a checkpoint's pieces live.

    Attributes:
        name: a short label for tables and plots (the run directory's name).
        model_dir: the ``save_pretrained`` directory.
        run_dir: the run directory when the model is the final model of a training run, else None.
    """

    name: str
    model_dir: Path
    run_dir: Path | None

    @property
    def eval_dir(self) -> Path:
        """Default output directory: ``<run>/eval`` (or ``<model dir>/eval`` for a bare model)."""
        return RunDir(self.run_dir or self.model_dir).eval  # a bare model keeps its results as a run would

    def data_dir(self, override: Path | str | None = None) -> Path:
        """The prepared data: ``override``, else the run's ``data.dir``, else the default prepared corpus."""
        if override is not None:
            return Path(override).expanduser()
        run_config = RunDir(self.run_dir).config if self.run_dir is not None else None
        if run_config is not None and run_config.exists():
            config = yaml.safe_load(run_config.read_text()) or {}
            data = (config.get("data") or {}).get("dir")
            if data:
                return Path(data).expanduser()
        from tttlm.data.prepare import default_data_dir

        return default_data_dir()

    def load_model(self, dtype: str = "float32", device: str = "cpu") -> PreTrainedModel:
        """The model in eval mode, in ``dtype`` on ``device``."""
        from tttlm.models import load

        model = load(self.model_dir)
        return model.to(device=device, dtype=DTYPES[dtype]).eval()

    def load_tokenizer(self, data_dir: Path | None = None) -> PreTrainedTokenizerBase:
        """The tokenizer saved with the model (the trainer copies it there), else the data's ``tokenizer/``."""
        from tttlm.data.prepare import TOKENIZER_DIR
        from tttlm.data.tokenizer import load_tokenizer

        if (self.model_dir / "tokenizer.json").exists():
            return load_tokenizer(self.model_dir)
        if data_dir is not None and (data_dir / TOKENIZER_DIR).is_dir():
            return load_tokenizer(data_dir / TOKENIZER_DIR)
        raise CheckpointError(f"no tokenizer in {self.model_dir} (and no data directory with one was given)")


def resolve_checkpoint(path: Path | str) -> Checkpoint:
    """A ``Checkpoint`` for a run or model directory; ``CheckpointError`` names what is missing."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    run = RunDir(path)
    if (run.model / "config.json").exists():
        return Checkpoint(name=path.resolve().name, model_dir=run.model, run_dir=path)
    if (path / "config.json").exists():
        owner = RunDir.of_model(path)  # a run's final model reports into that run
        if owner is not None:
            return Checkpoint(name=owner.path.name, model_dir=path, run_dir=owner.path)
        return Checkpoint(name=path.resolve().name, model_dir=path, run_dir=None)
    raise CheckpointError(
        f"{path} is neither a run directory (with model/config.json; is training finished?) nor a model directory "
        "(with config.json)"
    )
