"""The layout of a run directory, in one place: the trainer writes it; the evaluators, the demo and the ablations
read it.

``<run>/`` (``out_dir`` of the training config, default ``runs/<name>``)::

    config.yaml      the resolved training config
    metrics.jsonl    train and eval records (``tttlm.train.metrics``)
    tensorboard/     the same records as TensorBoard events
    checkpoints/     one ``step-N/`` directory per checkpoint (``tttlm.train.checkpoint``)
    model/           the final weights, model config and tokenizer (``from_pretrained``-loadable), at the end, with
                     ``export.json``: each file's size and sha256 (``checkpoint.write_export``/``verify_export``)
    eval/            what ``tttlm eval`` writes by default
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is read or created: each property is just where that piece lives)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @classmethod
    def of_model(cls, model_dir: Path) -> RunDir | None:
        """The run whose final model ``model_dir`` is (a ``model/`` beside a ``metrics.jsonl``), else None."""
        run = cls(Path(model_dir).resolve().parent)
        return run if Path(model_dir).name == run.model.name and run.metrics.exists() else None
