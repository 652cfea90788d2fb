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
nothing in the weights or the function, e.g. the context the model may be run at) and ``MAY_CHANGE`` (what a second
stage changes on purpose, said in the log), and the same parameter names and shapes. Anything else is refused with
the differences listed.
"""

from __future__ import annotations

from dataclasses import dataclass
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
# architectural values a second stage may change on purpose: RoPE's base, which paper 2 raises for full attention
# when it extends the context (θ 500K at 8K pre-training → 1M … 10M at 16K … 128K; its Appendix); no weight depends
# on it. Each change is named in the log line.
MAY_CHANGE = frozenset({"rope_theta"})


@dataclass(frozen=True)
class Source:
    """Where ``model.init_from``'s weights are read: ``directory``, and ``payload``, its verified ``checkpoint.json``
    when it is a checkpoint (None for a model directory, whose export manifest, if any, was verified)."""

    directory: Path
    payload: dict[str, Any] | None = None


def resolve_source(path: Path) -> Source:
    """The source at ``path`` (see the module docstring), its checksums verified once: a run's ``model/`` or newest
    valid checkpoint, a checkpoint, or a model directory. Raises ConfigError when ``path`` is not a directory or is a
    run with nothing saved yet (and ``CorruptCheckpointError`` when files fail their checksums)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError(f"model.init_from: {path} is not a directory (a run, a checkpoint or a model directory)")
    run = RunDir(path)
    if (run.model / ckpt.EXPORT_MANIFEST).is_file():
        path = run.model
    elif run.checkpoints.is_dir():
        found = ckpt.latest_valid(path, report=lambda message: None)
        if found is None:
            raise ConfigError(f"model.init_from: the run {path} has neither a final model nor a checkpoint yet")
        return Source(*found)
    if (path / ckpt.STATE_FILE).is_file():
        return Source(path, ckpt.verify(path))
    if (path / ckpt.EXPORT_MANIFEST).is_file():
        ckpt.verify_export(path)
    return Source(path)


def model_like_source(source: Source, arch: str) -> PreTrainedModel:
    """A freshly initialised model with the source's own config (``model.size: from-init``: e.g. a ``tttlm
    e2e-init`` output, whose config is no preset); ConfigError unless the source is an ``arch`` model."""
    directory = source.directory
    if not (directory / "config.json").is_file():
        raise ConfigError(f"model.init_from: {directory} has no config.json to take the model's config from")
    config = AutoConfig.from_pretrained(directory)
    if getattr(config, ARCH_ATTR, None) != arch:
        raise ConfigError(
            f"model.init_from: {directory} is a {getattr(config, ARCH_ATTR, None) or config.model_type} model, this "
            f"run builds {arch}: set model.arch to the source's"
        )
    return AutoModelForCausalLM.from_config(config)


def read_source(source: Source) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """The weights, the model config (as plain data) and a description of ``source``.

    Raises ConfigError when the directory holds no usable weights.
    """
    path = source.directory
    if source.payload is not None:
        # the checkpoint's config.json (the model config) is among the files its manifest verified
        return (
            ckpt.load_weights(path, source.payload),
            _config(path),
            f"checkpoint {path} (step {source.payload['step']})",
        )
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


def config_differences(source: dict[str, Any], target: dict[str, Any], changeable: bool = False) -> list[str]:
    """``key: source → target`` for every architectural config value that differs (keys in ``MAY_DIFFER`` aside):
    of the keys in ``MAY_CHANGE`` when ``changeable``, else of all others."""
    keys = {key for key in (set(source) | set(target)) - MAY_DIFFER if (key in MAY_CHANGE) == changeable}
    return [
        f"{key}: {source.get(key, '(unset)')!r} → {target.get(key, '(unset)')!r}"
        for key in sorted(keys)
        if source.get(key) != target.get(key)
    ]


def initialise_from(model: nn.Module, source: Source) -> str:
    """Load the weights of ``source`` into ``model`` (a freshly built registry model); return what was loaded, for
    the log. Raises ConfigError, naming every difference, when the architectures disagree."""
    weights, source_config, what = read_source(source)
    target_config = model.config.to_dict()
    source_arch, target_arch = source_config.get(ARCH_ATTR), target_config.get(ARCH_ATTR)
    if (source_arch, source_config.get("model_type")) != (target_arch, target_config.get("model_type")):
        raise ConfigError(
            f"model.init_from: {what} is a {source_arch or source_config.get('model_type')} model, this run builds "
            f"{target_arch}: another architecture; set model.arch (and size/overrides) to the source's"
        )
    changed = config_differences(source_config, target_config, changeable=True)
    differences = config_differences(source_config, target_config)
    if differences:
        shown = "; ".join(differences[:8]) + (" …" if len(differences) > 8 else "")
        raise ConfigError(
            f"model.init_from: {what} has another architecture than this run's model ({shown}); set model.arch, "
            "model.size and model.overrides so that they build the source's model"
        )
    expected = model.state_dict()
    # a tied LM head is saved once, as the embedding
    tied = "lm_head.weight" in expected and "lm_head.weight" not in weights
    wanted = set(expected) - ({"lm_head.weight"} if tied else set())
    problems = sorted(wanted - set(weights)) + sorted(set(weights) - set(expected))
    problems += [n for n in weights if n in expected and tuple(weights[n].shape) != tuple(expected[n].shape)]
    if problems:
        raise ConfigError(f"model.init_from: the weights of {what} do not fit this model ({', '.join(problems[:8])})")
    model.load_state_dict(weights, strict=not tied)
    if tied:
        model.tie_weights()
    change = f", {'; '.join(changed)}" if changed else ""
    return f"weights from {what} ({arch_of(model)}){change}, optimizer and schedule fresh"
