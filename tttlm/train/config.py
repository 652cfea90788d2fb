"""The training configuration: a YAML file with a few sections, validated before anything runs.

Example (``configs/tiny.yaml`` has every key with comments)::

    model: {arch: ttt-linear, size: tiny, overrides: {}}
    data: {dir: null, seq_len: 128}            # null: the default prepared corpus
    train: {steps: 200, batch_tokens: 2048, micro_batch_size: 8}
    optim: {lr: 3.0e-3, min_lr: 1.0e-5, warmup_steps: 20, weight_decay: 0.1}
    eval: {every: 50, tokens: 16384}
    checkpoint: {every: 100, keep_last: 2}

``batch_tokens`` is the global batch per optimizer step; each process runs ``micro_batch_size`` sequences of
``seq_len`` per forward/backward and accumulates gradients over
``batch_tokens / (seq_len * micro_batch_size * world_size)`` micro-steps, so the optimisation does not depend on
how many processes share the work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tttlm.train.inner_lr import WarmupError, parse_warmup

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bf16", "float64")
ON_NONFINITE = ("stop", "skip")
# keys of the trajectory sections that do not change the sequence of weights (checks, fault handling): a resume
# with other values is still exact, and checkpoints written before these keys existed still resume
# (train.compile: compiled kernels reorder floating-point sums, so a resume that turns it on or off continues at
# rounding level, not bit for bit; it changes no setting of the optimisation)
_NOT_TRAJECTORY = {"data": ("verify_checksums",), "train": ("on_nonfinite", "compile")}
# what the registry did before model.match_params existed: every arch's width matched to TTT-Linear's
MATCH_PARAMS_BEFORE = "ttt-linear"
# trajectory keys added later, with the value that a config saved before they existed was trained under
_ADDED_LATER = {
    "train": {"inner_lr_warmup": "off", "trainable": []},
    # before it, the rule was ours with its name patterns (saved configs list them in optim.no_decay)
    "optim": {"decay": "matrices"},
    "model": {"init_from": None},
    "data": {"mask_bos_targets": False, "min_document_tokens": 0, "needle_mixture": None},
}
# sections a resume with --allow-config-change may change (model and data must stay: the weights and the windows)
CHANGEABLE_ON_RESUME = ("seed", "precision", "train", "optim")
# which parameters get weight decay: every one (the papers' trainers) or weight matrices only (ours); see
# tttlm.train.optim
DECAY_RULES = ("all", "matrices")


class ConfigError(ValueError):
    """A training configuration is invalid; the message names the key, the value and the fix."""


@dataclass
class ModelConfig:
    """Which model: ``arch`` of the model registry, a ``size`` preset, config ``overrides``, ``match_params`` (None:
    the papers' widths; "ttt-linear": the arch's width solved to TTT-Linear's parameter count, as a comparison may
    ask, ``registry.build``), and ``init_from``: a run, checkpoint or model directory whose weights the run starts
    from (``tttlm.train.init_from``; None: fresh)."""

    arch: str = "ttt-linear"
    size: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    match_params: str | None = None
    init_from: str | None = None


@dataclass
class NeedleMixtureConfig:
    """Synthetic needle documents in the training stream (``tttlm.data.needles``): each training sequence is one with
    probability ``rate`` in [0, 1), of a task drawn uniformly from ``tasks`` (S-NIAH tasks of ``tttlm.eval.niah``;
    each brings its haystack: s-niah-1 RULER's noise, s-niah-2/3 an essay from the train split); ``targets``: the
    tokens of a needle document trained on, "answer" (its answer's) or "all" (every one but the padding)."""

    rate: float = 0.25
    tasks: tuple[str, ...] = ("s-niah-1",)
    targets: str = "answer"


@dataclass
class DataConfig:
    """Packed data (a directory written by ``tttlm data prepare``; null: the default one), the context length, and
    whether the token files are checked against their recorded sha256 before training."""

    dir: str | None = None
    seq_len: int = 2048
    # false skips the sha256 check of the packed token files when a run starts or resumes (for corpora so large that
    # reading them once costs too much); tokens corrupted in place then go unnoticed
    verify_checksums: bool = True
    # the TTT-E2E release's data: leave out of the loss every target that is the document separator (BOS there, our
    # end-of-text token here), and train and validate only on documents of at least this many tokens (0: all)
    mask_bos_targets: bool = False
    min_document_tokens: int = 0
    # synthetic needle documents mixed into the training stream, e.g. {rate: 0.25, tasks: [s-niah-1, s-niah-2]};
    # null: none (NeedleMixtureConfig)
    needle_mixture: NeedleMixtureConfig | None = None


@dataclass
class TrainLoopConfig:
    """Optimizer steps, the global batch in tokens, the per-process micro-batch in sequences, what a step with a
    non-finite loss or gradient norm does (``stop`` the run before the update, or ``skip`` the update and go on), and
    the inner-learning-rate warm-up of TTT models (``tttlm.train.inner_lr``)."""

    steps: int = 1000
    batch_tokens: int = 524288
    micro_batch_size: int = 1
    on_nonfinite: str = "stop"
    # warm-up of a TTT model's inner learning rate: auto (the arch's recipe), off, or {init_ratio, fraction}; see
    # tttlm.train.inner_lr
    inner_lr_warmup: str | dict[str, float] = "auto"
    # train only the parameters whose name matches one of these regexes (search); the others are frozen. Empty:
    # all. E.g. ["layers\\.(9|10|11)\\."] for the last blocks of a converted model (their prime MLPs included)
    trainable: tuple[str, ...] = ()
    # torch.compile the micro-steps' forward and backward (inductor; evaluation stays eager; tttlm.models.compiled).
    # Off by default: on this project's CPU no arch both wins and compiles in under a minute (docs/ARCHITECTURE.md,
    # "torch.compile"). Checkpoints hold the plain module's weights either way
    compile: bool = False


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay from ``lr`` to ``min_lr``; global-norm gradient clipping."""

    lr: float = 3e-3
    min_lr: float = 1e-5
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    # weight decay on every parameter ("all", the papers' trainers) or on weight matrices only ("matrices", ours);
    # no_decay: name patterns (regex search) exempt besides
    decay: str = "all"
    no_decay: tuple[str, ...] = ()


@dataclass
class EvalConfig:
    """Validation loss every ``every`` steps (0: only at the end) on ``tokens`` tokens of the val split (0: never)."""

    every: int = 100
    tokens: int = 65536


@dataclass
class CheckpointConfig:
    """A checkpoint every ``every`` steps (and at the end, and on SIGINT/SIGTERM); the last ``keep_last`` are kept."""

    every: int = 100
    keep_last: int = 3


@dataclass
class LogConfig:
    """Metrics: JSONL every ``every`` steps, TensorBoard events, and a live progress bar on the main process."""

    every: int = 1
    tensorboard: bool = True
    progress: bool = True


@dataclass
class DistributedConfig:
    """Under torchrun: DDP by default; ``fsdp: true`` shards parameters, gradients and optimizer state (FSDP2)."""

    fsdp: bool = False


@dataclass
class TrainConfig:
    """A whole training run. ``out_dir`` defaults to ``runs/<name>``; ``name`` to the config file's stem."""

    name: str = "run"
    out_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir if self.out_dir else f"runs/{self.name}").expanduser()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), as saved with runs and checkpoints."""
        return _plain(dataclasses.asdict(self))

    def trajectory(self) -> dict[str, Any]:
        """The settings that determine the sequence of weights; a resumed run must match them exactly."""
        return trajectory_of(self.to_dict())


def trajectory_of(plain: dict[str, Any]) -> dict[str, Any]:
    """``TrainConfig.trajectory`` of a config as plain data (e.g. the one a checkpoint records); a missing section
    is None."""
    out = {key: plain.get(key) for key in ("seed", "precision", "model", "data", "train", "optim")}
    for section, keys in _NOT_TRAJECTORY.items():
        if isinstance(out[section], dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    for section, added in _ADDED_LATER.items():
        if isinstance(out[section], dict):
            out[section] = {**added, **out[section]}
    if isinstance(out["model"], dict):
        out["model"] = {**out["model"], "match_params": _effective_match_params(out["model"])}
    if isinstance(out["data"], dict):
        from tttlm.data.prepare import configured_data_dir

        # the directory the trainer reads: a run trained with ``dir: null`` equals one that names the cache's data
        # directory (the experiment runner names it)
        out["data"] = {**out["data"], "dir": str(configured_data_dir(out["data"].get("dir")))}
    return out


def _effective_match_params(model: dict[str, Any]) -> str | None:
    """``model.match_params`` as it acts on the model: None where matching changes nothing (the reference, ttt-e2e,
    a width given), so that these runs compare equal either way. A config saved before the key existed was trained
    under the registry's default of then, widths matched to TTT-Linear."""
    from tttlm.models.registry import ARCHS, solves_width  # the registry's rule; torch is loaded only here

    value = model.get("match_params", MATCH_PARAMS_BEFORE)
    arch, overrides = model.get("arch"), model.get("overrides") or {}
    if arch not in ARCHS or model.get("size") == "from-init":
        return value
    return value if solves_width(arch, overrides) else None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainLoopConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "log": LogConfig,
    "distributed": DistributedConfig,
}


def _check_type(where: str, value: Any, default: Any) -> Any:
    """Coerce ``value`` to the type of the field's default (ints for floats are fine), or raise ConfigError."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads "3e-3" (no dot) as a string
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        if not math.isfinite(value):  # YAML reads .inf and .nan as floats; no setting can use them
            raise ConfigError(f"{where} must be a finite number; got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        items = [_check_type(f"{where}[{i}]", v, default[0]) if default else v for i, v in enumerate(value)]
        return tuple(items)
    if isinstance(default, dict):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping; got {value!r}")
        return dict(value)
    if default is None or isinstance(default, str):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where} must be a string; got {value!r}")
        return value
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values; got {raw!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.{k}' if where else k for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(known)}"
        )
    defaults = cls()
    values = {}
    for name, value in raw.items():
        key = f"{where}.{name}" if where else name
        if name in _SECTIONS and not where:
            values[name] = _build(_SECTIONS[name], value, name)
        elif key == "data.needle_mixture":
            values[name] = None if value is None else _build(NeedleMixtureConfig, value, key)
        elif key == "train.inner_lr_warmup":
            try:
                values[name] = parse_warmup(key, value)
            except WarmupError as error:
                raise ConfigError(str(error)) from None
        else:
            values[name] = _check_type(key, value, getattr(defaults, name))
    return cls(**values)


def _positive(where: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{where} must be > 0; got {value}")


def validate(config: TrainConfig) -> TrainConfig:
    """Raise ConfigError for values that cannot work; return the config unchanged otherwise."""
    if config.device not in DEVICES and not config.device.startswith("cuda:"):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} or cuda:N; got {config.device!r}")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {config.precision!r}")
    if config.threads < 0:
        raise ConfigError(f"threads must be >= 0 (0: PyTorch's default); got {config.threads}")
    data, loop, optim = config.data, config.train, config.optim
    if data.seq_len < 2:  # a window of L tokens trains L - 1 predictions
        raise ConfigError(f"data.seq_len must be >= 2 (tokens are predicted from earlier ones); got {data.seq_len}")
    if loop.on_nonfinite not in ON_NONFINITE:
        raise ConfigError(f"train.on_nonfinite must be one of {', '.join(ON_NONFINITE)}; got {loop.on_nonfinite!r}")
    for where, value in (
        ("train.steps", loop.steps),
        ("train.batch_tokens", loop.batch_tokens),
        ("train.micro_batch_size", loop.micro_batch_size),
        ("optim.lr", optim.lr),
        ("optim.eps", optim.eps),
        ("optim.grad_clip", optim.grad_clip),
        ("log.every", config.log.every),
        ("checkpoint.keep_last", config.checkpoint.keep_last),
    ):
        _positive(where, value)
    if loop.batch_tokens % data.seq_len:
        raise ConfigError(
            f"train.batch_tokens ({loop.batch_tokens}) must be a multiple of data.seq_len ({data.seq_len}); "
            f"e.g. {max(1, loop.batch_tokens // data.seq_len) * data.seq_len}"
        )
    if not 0 <= optim.min_lr <= optim.lr:
        raise ConfigError(f"optim.min_lr must be in [0, optim.lr={optim.lr}]; got {optim.min_lr}")
    if not 0 <= optim.warmup_steps <= loop.steps:
        raise ConfigError(f"optim.warmup_steps must be in [0, train.steps={loop.steps}]; got {optim.warmup_steps}")
    if optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0; got {optim.weight_decay}")
    if optim.decay not in DECAY_RULES:
        raise ConfigError(
            f"optim.decay must be all (every parameter, the papers' trainers) or matrices (weight matrices only); "
            f"got {optim.decay!r}"
        )
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.95]; got {list(optim.betas)}")
    if config.eval.every < 0 or config.checkpoint.every < 0:
        raise ConfigError("eval.every and checkpoint.every must be >= 0 (0: only at the end)")
    if config.eval.tokens and config.eval.tokens < data.seq_len:
        raise ConfigError(
            f"eval.tokens ({config.eval.tokens}) must be at least data.seq_len ({data.seq_len}), or 0 for no evaluation"
        )
    if data.min_document_tokens < 0:
        raise ConfigError(
            f"data.min_document_tokens must be >= 0 (0 keeps every document); got {data.min_document_tokens}"
        )
    if data.needle_mixture is not None:
        from tttlm.data.needles import check_mixture

        try:
            check_mixture(data.needle_mixture.rate, data.needle_mixture.tasks, data.needle_mixture.targets)
        except ValueError as error:
            raise ConfigError(f"data.needle_mixture: {error}") from None
    if config.model.size == "from-init" and (config.model.init_from is None or config.model.overrides):
        raise ConfigError(
            "model.size: from-init takes the whole model config from model.init_from: set init_from and leave "
            "model.overrides empty (or name a size preset and give the overrides that build the source's model)"
        )
    from tttlm.models.compiled import CompileUnsupportedError, check_compilable
    from tttlm.models.registry import matches_params  # the registry's rule; torch is loaded only here

    if loop.compile:
        try:
            check_compilable(config.model.arch, training=True)
        except CompileUnsupportedError as error:
            raise ConfigError(f"train.compile: {error}") from None

    try:
        matches_params(config.model.match_params)
    except ValueError as error:
        raise ConfigError(f"model.match_params: {error}") from None
    if "vocab_size" in config.model.overrides and not isinstance(config.model.overrides["vocab_size"], int):
        raise ConfigError("model.overrides.vocab_size must be an integer (or left out: the tokenizer's vocab size)")
    return config


def accumulation_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-steps per optimizer step on each process; ConfigError when the batch does not divide evenly."""
    sequences = config.train.batch_tokens // config.data.seq_len
    per_step = config.train.micro_batch_size * world_size
    if sequences % per_step:
        options = [m for m in range(1, sequences + 1) if sequences % (m * world_size) == 0]
        raise ConfigError(
            f"the global batch of {sequences} sequences (train.batch_tokens / data.seq_len) cannot be split into "
            f"micro-batches of {config.train.micro_batch_size} on {world_size} process(es); "
            f"train.micro_batch_size could be one of {options[:8] or 'none: change batch_tokens'}"
        )
    return sequences // per_step


def _apply_override(raw: dict[str, Any], assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE such as train.steps=10; got {assignment!r}")
    value = yaml.safe_load(text) if text.strip() else None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict[str, Any], *, name: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """A validated ``TrainConfig`` from plain data (a parsed YAML file), with ``--set KEY=VALUE`` overrides."""
    raw = _plain(dict(raw or {}))
    for assignment in overrides:
        _apply_override(raw, assignment)
    if name and "name" not in raw:
        raw["name"] = name
    return validate(_build(TrainConfig, raw, ""))


def load_config(path: Path | str, overrides: list[str] = ()) -> TrainConfig:
    """Read and validate a YAML training config; ``overrides`` are ``KEY=VALUE`` strings (e.g. ``train.steps=10``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; see configs/ for examples (configs/tiny.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping (sections model, data, train, ...), not {type(raw).__name__}")
    return config_from_dict(raw, name=path.stem, overrides=list(overrides))
