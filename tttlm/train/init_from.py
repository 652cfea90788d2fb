"""Start a run from another run's weights (``model.init_from``, ``tttlm train --init-from``): the two-stage recipe.

The TTT-E2E release pre-trains at 8K and then extends at 32K/128K from the pre-trained weights with a fresh optimiser
and a restarted schedule. Here the source is any of:

* a run directory: its final model (``model/``, verified against its manifest) or, if the run has not finished,
  its newest valid checkpoint;
* one checkpoint directory (``checkpoints/step-N``, verified);
* a model directory written by ``save_pretrained`` (an export, ``tttlm convert`` or ``tttlm e2e-init`` output).

``model.size: from-init`` builds the model from the source's own config (for a source whose config is no preset).

Only the weights are taken (safetensors, never a pickle): the optimiser state, the step and the RNG start afresh.
The architectures must agree: the same registry arch, the same model config up to ``MAY_DIFFER`` (what changes
nothing in the weights or the function, e.g. the context the model may be run at), and the same parameter names
and shapes. Anything else is refused with the differences listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from tttlm.models.checkpoint_files import safetensors_files
from tttlm.models.registry import ARCH_ATTR, arch_of
from tttlm.train import checkpoint as ckpt
from tttlm.train.config import ConfigError
from tttlm.train.run_dir import RunDir

# model.size that takes the whole model config from the model.init_from source
SOURCE_SIZE = "from-init"

# config keys that may differ between the source and the new run: bookkeeping of transformers, special tokens (the
# trainer sets them from the data) and execution details that do not change what the weights compute
MAY_DIFFER = frozenset(
    {
        "transformers_version",
        "architectures",
        "_name_or_path",
        "torch_dtype",
        "dtype",
        "auto_map",
        "use_cache",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "attention_block_size",
        "output_hidden_states",
        "return_dict",
        "ttt_form",
    }
)


def source_directory(path: Path) -> Path:
    """The directory the weights of ``path`` are read from: a run's ``model/`` or newest valid checkpoint, else
    ``path`` itself. Raises ConfigError when ``path`` is not a directory or is a run with nothing saved yet."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError(f"model.init_from: {path} is not a directory (a run, a checkpoint or a model directory)")
    run = RunDir(path)
    if (run.model / ckpt.EXPORT_MANIFEST).is_file():
        return run.model
    if run.checkpoints.is_dir():
        found = ckpt.latest_valid(path, report=lambda message: None)
        if found is None:
            raise ConfigError(f"model.init_from: the run {path} has neither a final model nor a checkpoint yet")
        return found[0]
    return path


def model_like_source(path: Path, arch: str) -> PreTrainedModel:
    """A freshly initialised model with the source's own config (``model.size: from-init``: e.g. a ``tttlm
    e2e-init`` output, whose config is no preset); ConfigError unless the source is an ``arch`` model."""
    directory = source_directory(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"model.init_from: {directory} has no config.json to take the model's config from")
    config = AutoConfig.from_pretrained(directory)
    if getattr(config, ARCH_ATTR, None) != arch:
        raise ConfigError(
            f"model.init_from: {directory} is a {getattr(config, ARCH_ATTR, None) or config.model_type} model, this "
            f"run builds {arch}: set model.arch to the source's"
        )
    return AutoModelForCausalLM.from_config(config)


def read_source(path: Path) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """The weights, the model config (as plain data) and a description of the source at ``path``.

    Raises ConfigError when ``path`` holds no usable weights (and ``CorruptCheckpointError`` when they fail their
    checksums).
    """
    path = source_directory(path)
    if (path / ckpt.STATE_FILE).is_file():
        payload = ckpt.verify(path)
        weights = load_file(path / payload["weights"]["file"])
        for alias, name in payload["weights"]["aliases"].items():
            weights[alias] = weights[name]
        # the checkpoint's config.json (the model config) is among the files its manifest verified
        return weights, _config(path), f"checkpoint {path} (step {payload['step']})"
    if (path / ckpt.EXPORT_MANIFEST).is_file():
        ckpt.verify_export(path)
    files = safetensors_files(path)
    if not (path / "config.json").is_file() or not files:
        raise ConfigError(
            f"model.init_from: {path} holds no model (config.json + model*.safetensors), no checkpoint.json and no "
            "run; point it at a run directory, one of its checkpoints, or a save_pretrained directory"
        )
    weights: dict[str, Tensor] = {}
    for file in files:
        weights.update(load_file(file))
    return weights, _config(path), f"model {path}"


def _config(directory: Path) -> dict[str, Any]:
    """The model config saved in ``directory`` with every default filled in (as ``PretrainedConfig.to_dict``)."""
    return AutoConfig.from_pretrained(directory).to_dict()


def config_differences(source: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """``key: source → target`` for every architectural config value that differs (keys in ``MAY_DIFFER`` aside)."""
    keys = (set(source) | set(target)) - MAY_DIFFER
    return [
        f"{key}: {source.get(key, '(unset)')!r} → {target.get(key, '(unset)')!r}"
        for key in sorted(keys)
        if source.get(key) != target.get(key)
    ]


def initialise_from(model: nn.Module, path: Path) -> str:
    """Load the weights of the source at ``path`` into ``model`` (a freshly built registry model); return what was
    loaded, for the log. Raises ConfigError, naming every difference, when the architectures disagree."""
    weights, source_config, what = read_source(path)
    target_config = model.config.to_dict()
    source_arch, target_arch = source_config.get(ARCH_ATTR), target_config.get(ARCH_ATTR)
    if (source_arch, source_config.get("model_type")) != (target_arch, target_config.get("model_type")):
        raise ConfigError(
            f"model.init_from: {what} is a {source_arch or source_config.get('model_type')} model, this run builds "
            f"{target_arch}: another architecture; set model.arch (and size/overrides) to the source's"
        )
    differences = config_differences(source_config, target_config)
    if differences:
        shown = "; ".join(differences[:8]) + (" …" if len(differences) > 8 else "")
        raise ConfigError(
            f"model.init_from: {what} has another architecture than this run's model ({shown}); set model.arch, "
            "model.size and model.overrides so that they build the source's model"
        )
    expected = model.state_dict()
    tied = {name for name in expected if name not in weights and name == "lm_head.weight"}
    problems = sorted(set(expected) - set(weights) - tied) + sorted(set(weights) - set(expected))
    problems += [n for n in weights if n in expected and tuple(weights[n].shape) != tuple(expected[n].shape)]
    if problems:
        raise ConfigError(f"model.init_from: the weights of {what} do not fit this model ({', '.join(problems[:8])})")
    model.load_state_dict({n: t for n, t in weights.items() if n not in tied}, strict=not tied)
    if tied:
        model.tie_weights()
    return f"weights from {what} ({arch_of(model)}), optimizer and schedule fresh"
