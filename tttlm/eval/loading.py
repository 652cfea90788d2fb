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
from transformers.utils import logging as hf_logging

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
        """The model in eval mode, in ``dtype`` on ``device``.

        A final model with a manifest (``checkpoint.EXPORT_MANIFEST``) is verified against it first; a directory that
        does not load, or whose ``config.json`` describes another model than its weights (transformers would
        initialise the missing weights at random), is a ``CheckpointError`` naming the problem.
        """
        from safetensors import SafetensorError

        from tttlm.models import load
        from tttlm.train.checkpoint import EXPORT_MANIFEST, CorruptCheckpointError, verify_export

        fix = f"re-export it (tttlm train --config ... --resume re-exports a run's model) or restore {self.model_dir}"
        if (self.model_dir / EXPORT_MANIFEST).exists():
            try:
                verify_export(self.model_dir)
            except CorruptCheckpointError as error:
                raise CheckpointError(f"the model in {self.model_dir} fails verification ({error}); {fix}") from None
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # transformers' load report of missing weights: _check_weights_cover says it
        try:
            model = load(self.model_dir)
        except (OSError, ValueError, KeyError, SafetensorError) as error:
            raise CheckpointError(f"cannot load the model in {self.model_dir} ({error}); {fix}") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        _check_weights_cover(model, self.model_dir)
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


def _check_weights_cover(model: PreTrainedModel, model_dir: Path) -> None:
    """``CheckpointError`` unless the ``*.safetensors`` of ``model_dir`` hold exactly the model's tensors (each tied
    pair once). Other weight formats are left to transformers."""
    from safetensors import safe_open

    from tttlm.train.checkpoint import tied_names

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return
    stored: set[str] = set()
    for file in files:
        with safe_open(file, framework="pt") as handle:
            stored.update(handle.keys())
    aliases = tied_names(model)
    partner = {**aliases, **{name: alias for alias, name in aliases.items()}}
    expected = set(model.state_dict())
    missing = sorted(k for k in expected if k not in stored and partner.get(k) not in stored)
    unexpected = sorted(stored - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{model_dir / 'config.json'} describes a {type(model).__name__} ({model.config.model_type}), but the "
            f"weights in {model_dir} are another model's ({len(missing)} of its {len(expected)} tensors missing, "
            f"e.g. {(missing or unexpected)[0]!r}; {len(unexpected)} unknown); put back the config.json saved with "
            "these weights"
        )


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
