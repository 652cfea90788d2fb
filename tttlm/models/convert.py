"""``tttlm convert``: other implementations' checkpoints as tttlm model directories, the format detected.

* a ttt-lm-pytorch directory (``config.json`` + ``model*.safetensors``): ``models/ttt/convert.py``;
* a TTT-E2E release checkpoint (an orbax run directory, one ``<step>/`` of it, or its ``model_weights``) with the
  release's config (``--config``: a composed Hydra ``config.yaml``, or JSON/YAML with its ``model``/``training``
  sections) or one of its sizes (``--preset``): ``models/e2e/release.py``, ``models/e2e/orbax.py``.

The output is a ``save_pretrained`` directory (safetensors) that ``AutoModelForCausalLM.from_pretrained`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import PreTrainedModel

from tttlm.models.e2e.modeling import E2EForCausalLM
from tttlm.models.e2e.orbax import is_release_checkpoint, read_model_weights
from tttlm.models.e2e.release import ReleaseFormatError, from_release, release_config, release_preset
from tttlm.models.e2e.weights import e2e_with_weights
from tttlm.models.ttt.convert import load_reference

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def detect_format(source: Path) -> str:
    """``"reference"`` (ttt-lm-pytorch) or ``"release"`` (TTT-E2E orbax); ValueError for anything else."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a directory: pass the checkpoint directory to convert")
    if is_release_checkpoint(source):
        return "release"
    if (source / "config.json").is_file():
        return "reference"
    raise ValueError(
        f"{source} is neither a ttt-lm-pytorch checkpoint (config.json + model*.safetensors) nor a TTT-E2E release "
        "checkpoint (<step>/model_weights/, as its trainer writes them)"
    )


def read_release_config(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ``model`` and ``training`` sections of a release config file (YAML or JSON; ``training`` may be absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"release config {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"release config {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(
            f"release config {path} has no `model` section: pass the run's composed Hydra config.yaml (or a JSON/YAML "
            "with `model` and optionally `training`, in the release's field names), or use --preset SIZE"
        )
    training = data.get("training")
    return data["model"], training if isinstance(training, dict) else None


def convert_release(
    source: Path, *, config: Path | None = None, preset: str | None = None, dtype: str = "float32"
) -> E2EForCausalLM:
    """Our TTT-E2E model from a release checkpoint; exactly one of ``config`` (a file) and ``preset`` (a size)."""
    if (config is None) == (preset is None):
        raise ValueError(
            "a TTT-E2E release checkpoint needs its configuration: pass --config CONFIG (the run's config.yaml) or "
            "--preset SIZE (one of the released sizes), not both"
        )
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    model_cfg, training_cfg = (release_preset(preset), None) if preset is not None else read_release_config(config)
    e2e_config = release_config(model_cfg, training_cfg)
    arrays, _ = read_model_weights(source)
    # stored as bf16 or f32 (the trainer's checkpoint float_dtype); numpy has no bf16 arithmetic, so widen first
    tensors = {name: torch.from_numpy(array.astype("float32")) for name, array in arrays.items()}
    model = e2e_with_weights(
        e2e_config,
        from_release(tensors, e2e_config),
        ReleaseFormatError,
        "for this config: does the config match the checkpoint?",
    )
    return model.to(DTYPES[dtype])


def convert_checkpoint(
    source: Path, *, config: Path | None = None, preset: str | None = None, dtype: str = "float32"
) -> PreTrainedModel:
    """The tttlm model of a checkpoint in either supported format (``detect_format``)."""
    if detect_format(source) == "release":
        return convert_release(source, config=config, preset=preset, dtype=dtype)
    if config is not None or preset is not None:
        raise ValueError(f"{source} is a ttt-lm-pytorch checkpoint: its config.json is read; drop --config/--preset")
    return load_reference(source).to(DTYPES[dtype])
