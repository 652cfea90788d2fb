"""The training loop: ``train(config) -> run directory``, as named steps, in the order they run:

1. ``load_data``: open the packed splits and check them against the model's vocabulary and the tokenizer.
2. ``prepare_run_dir`` (main process): refuse to overwrite a run, write ``config.yaml``.
3. ``build``: the model (the same initial weights on every process), DDP/FSDP2 around it, AdamW.
4. ``Trainer.resume`` (with ``--resume``): weights, optimizer state and RNG of the newest valid checkpoint.
5. ``Trainer.fit``: for each optimizer step, ``Trainer.step`` (forward/backward/update) then ``Trainer.after_step``
   (log, evaluate and checkpoint when due; stop after a signal).
6. ``Trainer.export``: the final ``from_pretrained``-loadable model with the tokenizer.

One optimizer step = ``accumulation`` micro-steps of ``micro_batch_size`` sequences on each process, the loss of
each micro-step divided by ``accumulation`` (DDP/FSDP average over processes), then global-norm clipping, the
learning rate of the step, and AdamW. Mixed precision: bf16 autocast on CUDA ("auto"), float32 on CPU; "float64"
runs the whole model in double precision (used by tests that compare runs to 1e-10).

What the run directory holds: ``tttlm.train.run_dir``; a checkpoint's files: ``tttlm.train.checkpoint``.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from tttlm.data.packing import DataMismatchError, PackedDataset
from tttlm.data.prepare import TOKENIZER_DIR, configured_data_dir
from tttlm.data.tokenizer import load_tokenizer
from tttlm.models import compiled
from tttlm.models.compiled import compiled_loss
from tttlm.train import checkpoint as ckpt
from tttlm.train import distributed as dist_utils
from tttlm.train.batches import TrainWindows, eval_windows, micro_batch_samples
from tttlm.train.config import (
    CHANGEABLE_ON_RESUME,
    ConfigError,
    TrainConfig,
    accumulation_steps,
    load_config,
    trajectory_of,
)
from tttlm.train.factory import make_model
from tttlm.train.init_from import SOURCE_SIZE, initialise_from, model_like_source, resolve_source
from tttlm.train.inner_lr import WarmupError, inner_lr_multiplier, resolve_warmup
from tttlm.train.metrics import MetricsWriter
from tttlm.train.optim import build_optimizer, lr_at
from tttlm.train.run_dir import RunDir

if TYPE_CHECKING:
    from tttlm.data.needles import NeedleMixture

Say = Callable[[str], None]
Autocast = Callable[[], contextlib.AbstractContextManager]


def train(
    config: TrainConfig | Path | str,
    *,
    resume: bool = False,
    overrides: list[str] = (),
    progress: bool | None = None,
    allow_config_change: bool = False,
) -> Path:
    """Train a model as ``config`` says (a ``TrainConfig`` or a YAML path); return the run directory.

    With ``resume``, continue from the newest valid checkpoint of the run directory (exactly: the same loss curve as
    an uninterrupted run). ``allow_config_change`` lets such a resume change the optimizer, schedule, batch, seed or
    precision (the run then continues from the checkpoint under the new settings, no longer exactly). ``overrides``
    are ``KEY=VALUE`` config changes (YAML path only). Under torchrun, every process calls this. Raises
    ``TrainingInterrupted`` after SIGINT/SIGTERM, once a checkpoint is saved, and ``NonFiniteError`` when a step's
    loss or gradient norm is not finite and ``train.on_nonfinite`` is ``stop``.
    """
    if not isinstance(config, TrainConfig):
        config = load_config(config, list(overrides))
    ctx = dist_utils.setup(config.device)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run_steps(config, ctx, resume=resume, progress=progress, allow_config_change=allow_config_change)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it
        dist_utils.teardown(ctx)


def _run_steps(
    config: TrainConfig,
    ctx: dist_utils.DistContext,
    *,
    resume: bool,
    progress: bool | None,
    allow_config_change: bool,
) -> Path:
    """The steps of the module docstring, in order, on this process."""
    console = _Console(enabled=ctx.is_main)
    run = RunDir(config.run_dir)
    data = load_data(config, say=console.say)
    if ctx.is_main:
        prepare_run_dir(config, run, resume=resume, say=console.say)
    dist_utils.barrier(ctx)  # no process reads the run directory before it is ready
    model, optimizer = build(config, ctx, data, say=console.say)
    trainer = Trainer(config, ctx, run, data, model, optimizer, console)
    start = trainer.resume(allow_config_change=allow_config_change) if resume else 0
    trainer.fit(start, resumed=resume, progress=config.log.progress if progress is None else progress)
    if start < config.train.steps or not _export_is_valid(run, console.say):  # a finished run keeps a good export
        out = trainer.export()
        console.say(f"done: {config.train.steps} steps; final model in {out}")
    return run.path


def _export_is_valid(run: RunDir, say: Say) -> bool:
    """Whether the run's ``model/`` passes ``checkpoint.verify_export``; says why not when it exists but fails."""
    if not run.model.exists():
        return False
    try:
        ckpt.verify_export(run.model)
    except ckpt.CorruptCheckpointError as error:
        say(f"the final model fails verification ({error}): exporting it again from the last checkpoint")
        return False
    return True


# ---------------------------------------------------------------- 1. load data


@dataclass(frozen=True)
class TrainData:
    """The data of a run, checked (``load_data``).

    Attributes:
        dir: the prepared data directory.
        train: the packed train split.
        val: the packed val split; None when ``eval.tokens`` is 0.
        vocab_size: the model's vocabulary: ``model.overrides.vocab_size``, else the tokenizer's.
        identity: the tokenizer's fingerprint and the train split's sha256; checkpoints record it so that a resume
            refuses other tokens under the same path.
        needles: the needle documents mixed into the training stream (``data.needle_mixture``); None: none.
    """

    dir: Path
    train: PackedDataset
    val: PackedDataset | None
    vocab_size: int
    identity: dict[str, str]
    needles: NeedleMixture | None = None


def load_data(config: TrainConfig, say: Say) -> TrainData:
    """Open the splits of ``data.dir`` (default: the prepared corpus) and check their token files against the
    recorded sha256s (unless ``data.verify_checksums`` is false, which ``say`` reports); ``CorruptDataError`` if they
    differ, ``DataMismatchError`` if the model's vocabulary does not cover the data or the data was made with another
    tokenizer than the one in the data directory."""
    data_dir = configured_data_dir(config.data.dir)
    train_split = PackedDataset(data_dir, "train")
    val_split = PackedDataset(data_dir, "val") if config.eval.tokens else None
    splits = [split for split in (train_split, val_split) if split is not None]
    if config.data.verify_checksums:
        for split in splits:
            split.verify_checksum()
    else:
        say(
            f"data.verify_checksums is false: not checking {', '.join(str(s.bin_path) for s in splits)} against the "
            "sha256s in meta.json (tokens corrupted in place would go unnoticed)"
        )
    if config.data.min_document_tokens:
        train_split, val_split = (
            None if split is None else _long_documents(split, config.data.min_document_tokens, say)
            for split in (train_split, val_split)
        )
    vocab_size = config.model.overrides.get("vocab_size", train_split.vocab_size)
    train_split.check_vocab(vocab_size)
    tokenizer_dir = data_dir / TOKENIZER_DIR
    if tokenizer_dir.is_dir():  # the tokenizer shipped with the final model must be the one the data was made with
        train_split.check_tokenizer(load_tokenizer(tokenizer_dir))
    identity = {"tokenizer": train_split.fingerprint, "train_sha256": train_split.meta["splits"]["train"]["sha256"]}
    needles = _needle_mixture(config, train_split, tokenizer_dir) if config.data.needle_mixture else None
    return TrainData(data_dir, train_split, val_split, vocab_size, identity, needles)


def _needle_mixture(config: TrainConfig, train_split: PackedDataset, tokenizer_dir: Path) -> NeedleMixture:
    """The needle documents of ``data.needle_mixture``, written with the data's tokenizer over essays of the train
    split (the evaluation's come from the test split); ConfigError when they cannot be made."""
    from tttlm.data.needles import NeedleMixture  # needs tttlm.eval, which imports tttlm.train
    from tttlm.eval.perplexity import long_documents

    if not tokenizer_dir.is_dir():
        raise ConfigError(
            f"data.needle_mixture writes its needle documents with the tokenizer the data was packed with, but "
            f"{tokenizer_dir} does not exist; prepare the data with tttlm data prepare (it saves the tokenizer there), "
            "or set data.needle_mixture: null"
        )
    mixture = config.data.needle_mixture
    essay = [doc for _, doc in long_documents(train_split, 1)]
    try:
        return NeedleMixture(
            load_tokenizer(tokenizer_dir),
            np.concatenate(essay) if essay else np.zeros(0, dtype=np.int64),
            rate=mixture.rate,
            tasks=mixture.tasks,
            targets=mixture.targets,
            seq_len=config.data.seq_len,
            seed=config.seed,
            pad_id=train_split.eos_token_id,
        )
    except ValueError as error:
        raise ConfigError(f"data.needle_mixture: {error}; set a longer data.seq_len or other tasks") from None


def _long_documents(split: PackedDataset, min_tokens: int, say: Say) -> PackedDataset:
    kept = split.long_documents(min_tokens)
    if not kept.num_documents:
        raise ConfigError(
            f"data.min_document_tokens={min_tokens}: no document of the {split.split} split is that long (the longest "
            f"has {int(np.diff(split.offsets).max(initial=0))} tokens); lower it, or use a corpus of longer documents"
        )
    say(
        f"{split.split}: {kept.num_documents} of {split.num_documents} documents have >= {min_tokens} tokens "
        f"({len(kept):,} of {len(split):,} tokens kept)"
    )
    return kept


def freeze_all_but(model: nn.Module, patterns: Sequence[str]) -> int:
    """Set ``requires_grad = False`` on every parameter whose name matches none of ``patterns`` (regex search);
    return how many were frozen. ConfigError when no parameter matches (nothing would train)."""
    compiled = [re.compile(p) for p in patterns]
    names = [name for name, _ in model.named_parameters()]
    kept = [name for name in names if any(p.search(name) for p in compiled)]
    if not kept:
        raise ConfigError(f"train.trainable {list(patterns)} matches no parameter (names look like {names[0]!r})")
    for name, param in model.named_parameters():
        param.requires_grad_(name in kept)
    return len(names) - len(kept)


def targets(batch: torch.Tensor, masked: int | None) -> torch.Tensor:
    """The labels of a (batch, seq) window: the ids themselves (shifted inside the model), with ``masked`` (the
    document separator, under ``data.mask_bos_targets``) replaced by -100 so that the loss leaves it out."""
    return batch if masked is None else batch.masked_fill(batch == masked, -100)


# ---------------------------------------------------------------- 2. prepare the run directory


def _unwritable(run: RunDir, error: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write the run directory {run.path} ({error.strerror}: {error.filename}); set out_dir to a "
        "writable directory, or fix its permissions"
    )


def write_run_config(config: TrainConfig, run: RunDir) -> None:
    """Write the resolved ``config.yaml``; ``ConfigError`` saying so when the run directory cannot be written."""
    try:
        run.config.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    except OSError as error:
        raise _unwritable(run, error) from None


def prepare_run_dir(config: TrainConfig, run: RunDir, *, resume: bool, say: Say) -> None:
    """Refuse to overwrite a run that has checkpoints unless resuming; start a fresh run's directory clean; write
    the resolved ``config.yaml`` unless there is a run to continue (``Trainer.resume`` writes it once the checkpoint
    accepts the config, so that a refused resume leaves the run's record as it was)."""
    existing = ckpt.list_checkpoints(run.path)
    if existing and not resume:
        raise ConfigError(
            f"{run.path} already holds checkpoints (newest: {existing[-1][1].name}); pass --resume to continue that "
            "run, or set out_dir (or name) to start a new one"
        )
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        ckpt.remove_temporaries(run.path)
        if not existing:
            # nothing to continue: drop logs of an earlier attempt that never reached a checkpoint
            shutil.rmtree(run.tensorboard, ignore_errors=True)
            if resume:
                say(f"no checkpoint in {run.path}: starting from step 0")
    except OSError as error:  # found before the first step rather than at the first checkpoint
        raise _unwritable(run, error) from None
    if not existing:
        write_run_config(config, run)


# ---------------------------------------------------------------- 3. build


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build(
    config: TrainConfig, ctx: dist_utils.DistContext, data: TrainData, say: Say = print
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model to train (wrapped for DDP/FSDP2 under torchrun) and its AdamW.

    The weights are initialised from ``config.seed`` on every process alike, or loaded from ``model.init_from``
    (``tttlm.train.init_from``); afterwards each process's RNG is reseeded with its rank, so whatever draws random
    numbers during training draws differently on each.
    """
    _seed_everything(config.seed)
    source = None if config.model.init_from is None else resolve_source(Path(config.model.init_from))
    if config.model.size == SOURCE_SIZE:
        model = model_like_source(source, config.model.arch)
    else:
        model = make_model(
            config.model.arch,
            config.model.size,
            {**config.model.overrides, "vocab_size": data.vocab_size},
            config.model.match_params,
        )
    # the data's end-of-text token starts and ends documents; generate() reads it from the generation config
    for settings in (model.config, getattr(model, "generation_config", None)):
        if settings is not None:
            settings.bos_token_id = settings.eos_token_id = data.train.eos_token_id
    if source is not None:
        message = initialise_from(model, source)
        if ctx.is_main:
            say(message)
    if config.train.trainable:
        frozen = freeze_all_but(model, config.train.trainable)
        if ctx.is_main:
            say(f"train.trainable: {frozen} parameter tensors frozen")
    model.to(device=ctx.device, dtype=torch.float64 if config.precision == "float64" else torch.float32)
    model.train()
    model = dist_utils.wrap(model, ctx, fsdp=config.distributed.fsdp)
    optimizer = build_optimizer(dist_utils.unwrap(model), config.optim)
    _seed_everything(config.seed + 1000003 * ctx.rank)
    return model, optimizer


# ---------------------------------------------------------------- 4. the trainer: resume, step, after-step, export


class NonFiniteError(FloatingPointError):
    """A step's loss or gradient norm, or the loss of the weights about to be checkpointed, is not finite; the
    message says which checkpoint to go back to and how."""


class TrainingInterrupted(RuntimeError):  # noqa: N818 (a stop, not an error)
    """SIGINT/SIGTERM stopped training after a checkpoint was written; ``--resume`` continues it."""

    def __init__(self, run_dir: Path, step: int, signum: int) -> None:
        self.run_dir, self.step, self.signum = run_dir, step, signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} at step {step}: checkpoint saved in {run_dir}; continue with --resume")


class _StopFlag:
    """Records SIGINT/SIGTERM so the loop can checkpoint and stop between steps; a second signal aborts at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint", file=sys.stderr)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


class _Console:
    """The run's messages: on the main process only, to stderr, written above the progress bar while it is shown."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def progress_bar(self, total: int, initial: int, *, shown: bool) -> Iterator[None]:
        """A bar of optimizer steps, moved by ``advance``, for the duration of the context (if ``shown``)."""
        if not (self.enabled and shown):
            yield
            return
        self._bar = tqdm(total=total, initial=initial, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
        try:
            yield
        finally:
            self._bar.close()
            self._bar = None

    def advance(self, loss: float, tokens_per_s: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self._bar.update(1)


def compile_enabled(config: TrainConfig, ctx: dist_utils.DistContext) -> bool:
    """Whether the run's micro-steps run compiled (``train.compile``); ConfigError where compile was asked for in
    more than one process (not supported yet). An arch that cannot train compiled was refused by ``validate``."""
    if not config.train.compile:
        return False
    if ctx.world_size > 1:
        raise ConfigError(
            f"train.compile: true is supported in one process only (this run has {ctx.world_size}; compiling "
            "around DDP/FSDP2 is not wired up or tested): set train.compile: false under torchrun"
        )
    return True


def _eager_loss(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(input_ids, labels)`` of the model, called as it is (``compiled.compiled_loss``'s eager twin)."""

    def loss(input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, labels=labels, use_cache=False).loss

    return loss


def _autocast(precision: str, device: torch.device) -> Autocast:
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _due(done: int, every: int) -> bool:
    """Whether something done every ``every`` steps (0: never) is due after step ``done``."""
    return every > 0 and done % every == 0


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: PackedDataset,
    starts: list[int],
    *,
    seq_len: int,
    micro_batch_size: int,
    ctx: dist_utils.DistContext,
    autocast: Autocast,
    masked: int | None = None,
) -> float:
    """Mean next-token loss over the windows ``starts`` (shared round-robin between processes); ``masked``: a target
    id left out (``targets``)."""
    was_training = model.training
    model.eval()
    mine = starts[ctx.rank :: ctx.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for i in range(0, len(mine), micro_batch_size):
        rows = [np.asarray(dataset.tokens[s : s + seq_len], dtype=np.int64) for s in mine[i : i + micro_batch_size]]
        batch = torch.from_numpy(np.stack(rows)).to(ctx.device)  # (micro_batch_size, seq_len)
        with autocast():
            loss = model(input_ids=batch, labels=targets(batch, masked), use_cache=False).loss
        total[0] += loss.double() * len(rows)
        total[1] += len(rows)
    dist_utils.all_reduce(total, ctx)
    model.train(was_training)
    return float(total[0] / total[1])


def _check_trajectory(saved: dict[str, Any], config: TrainConfig, path: Path, *, allow_change: bool, say: Say) -> None:
    """Refuse a resume under settings other than the checkpoint's; with ``allow_change``, accept (and report) changes
    of the sections in ``CHANGEABLE_ON_RESUME``."""
    current, old = config.trajectory(), trajectory_of(saved)
    changed = [key for key in current if old[key] != current[key]]
    if not changed:
        return
    details = "; ".join(f"{key}: {old[key]} -> {current[key]}" for key in changed)
    fixed = [key for key in changed if key not in CHANGEABLE_ON_RESUME]
    if allow_change and not fixed:
        say(f"resuming {path} with a changed config ({details}): from here on the run is not an exact continuation")
        return
    if allow_change:
        raise ConfigError(
            f"the config differs from the one {path} was trained with in {', '.join(fixed)} ({details}); even with "
            "--allow-config-change the model and data must stay the same: start a new run (another out_dir)"
        )
    raise ConfigError(
        f"the config differs from the one {path} was trained with in {', '.join(changed)} ({details}); an exact "
        "resume needs the same model, data, batch, optimizer and seed (eval, checkpoint and log may change); to "
        "continue under the new optimizer, schedule, batch or seed anyway pass --allow-config-change"
    )


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports to ``Trainer.after_step``.

    Attributes:
        done: optimizer steps completed, this one included.
        loss: the step's training loss, averaged over processes.
        lr: the learning rate of the step.
        grad_norm: the global gradient norm before clipping.
        seconds: wall-clock time of the step.
        signum: SIGINT/SIGTERM that any process had received by the end of the step (0: none).
        skipped: the loss or gradient norm was not finite and the update was skipped (``train.on_nonfinite: skip``).
    """

    done: int
    loss: float
    lr: float
    grad_norm: float
    seconds: float
    signum: int
    skipped: bool = False


class Trainer:
    """One process's run over a built model and optimizer: ``resume``, ``fit`` (``step`` then ``after_step`` for
    each optimizer step), ``export``."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: dist_utils.DistContext,
        run: RunDir,
        data: TrainData,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        console: _Console,
    ) -> None:
        self.config, self.ctx, self.run, self.data = config, ctx, run, data
        self.model, self.optimizer, self.console = model, optimizer, console
        self.inner = dist_utils.unwrap(model)
        try:
            self.inner_lr_warmup = resolve_warmup(config.train.inner_lr_warmup, self.inner)
        except WarmupError as error:
            raise ConfigError(str(error)) from None
        self.accumulation = accumulation_steps(config, ctx.world_size)
        self.autocast = _autocast(config.precision, ctx.device)
        self.windows = TrainWindows(data.train, config.data.seq_len, config.seed)
        self.eval_starts = (
            eval_windows(data.val, config.data.seq_len, config.eval.tokens, ctx.world_size)
            if data.val is not None
            else []
        )
        self.stop = _StopFlag()
        self.last_val: float | None = None  # the latest validation loss, recorded in checkpoints
        # the separator's id when its targets are left out of the loss (data.mask_bos_targets)
        self.masked = data.train.eos_token_id if config.data.mask_bos_targets else None
        # the micro-steps' loss: eager, or compiled (train.compile); self.model stays the plain module, so
        # checkpoints, the export and evaluation see it unchanged
        self.compiled = compile_enabled(config, ctx)
        self.loss_of = _eager_loss(model) if not self.compiled else compiled_loss(model, compiled.DEFAULT_BACKEND)

    def resume(self, *, allow_config_change: bool = False) -> int:
        """Load the newest valid checkpoint of the run into the model, the optimizer and this process's RNG; return
        its step (0 when the run has none).

        Corrupt checkpoints are reported and skipped; a checkpoint of another trajectory (``ConfigError``, unless
        ``allow_config_change`` and only the optimizer, schedule, batch, seed or precision changed) or of other data
        (``DataMismatchError``) is refused.
        """
        found = ckpt.latest_valid(self.run.path, report=self.console.say)
        if found is None:
            return 0
        path, payload = found
        _check_trajectory(payload["config"], self.config, path, allow_change=allow_config_change, say=self.console.say)
        if payload["train_state"].get("data", self.data.identity) != self.data.identity:
            raise DataMismatchError(
                f"the data in {self.data.dir} changed since {path} was written (other tokens or tokenizer); resume "
                "with the data it was trained on, or start a new run"
            )
        step = payload["step"]
        if step > self.config.train.steps:  # only reachable with --allow-config-change: fewer steps than done
            raise ConfigError(
                f"{path} is already past train.steps={self.config.train.steps} (step {step}); set train.steps to at "
                f"least {step}"
            )
        if self.ctx.is_main:
            write_run_config(self.config, self.run)
        ckpt.load(path, payload, model=self.model, optimizer=self.optimizer, ctx=self.ctx)
        saved_world = payload["train_state"].get("world_size", 1)
        extra = (
            "" if saved_world == self.ctx.world_size else f" (saved with {saved_world} processes: RNG streams reset)"
        )
        self.console.say(f"resuming from {path} (step {step}, checksums verified){extra}")
        return step

    def summary(self) -> str:
        """Three lines for the log: the model, the data and processes, the batch."""
        config, ctx = self.config, self.ctx
        n_params = sum(p.numel() for p in self.inner.parameters())
        # the optimizer's groups are the weight-decay split (build_optimizer leaves out an empty group)
        tensors = {group["name"]: len(group["params"]) for group in self.optimizer.param_groups}
        return (
            f"{config.model.arch} {config.model.size}: {n_params / 1e6:.2f}M parameters ({tensors.get('decay', 0)} "
            f"tensors with weight decay, {tensors.get('no_decay', 0)} without), vocab {self.data.vocab_size}\n"
            f"data {self.data.dir}: {len(self.data.train):,} train tokens ({self.windows.num_windows:,} windows of "
            f"{config.data.seq_len}); {ctx.world_size} process(es) on {ctx.device}, precision {config.precision}"
            f"{', compiled (train.compile)' if self.compiled else ''}\n"
            f"{config.train.steps} steps x {config.train.batch_tokens:,} tokens = {config.train.micro_batch_size} "
            f"sequences x {self.accumulation} micro-steps x {ctx.world_size} process(es); run dir {self.run.path}"
        )

    def fit(self, start: int, *, resumed: bool, progress: bool) -> None:
        """Optimizer steps ``start`` … ``train.steps − 1``: ``step``, then ``after_step``.

        ``resumed``: the run continues from the checkpoint of step ``start``, so the metrics logged after it are
        dropped (they are about to be logged again); otherwise the metrics start empty.
        """
        self.console.say(self.summary())
        steps = self.config.train.steps
        metrics = MetricsWriter(
            self.run.path,
            enabled=self.ctx.is_main,
            tensorboard=self.config.log.tensorboard,
            resume_step=start if resumed else None,
        )
        with (
            contextlib.closing(metrics),
            self.console.progress_bar(steps, start, shown=progress),
            self.stop.installed(),
        ):
            for step in range(start, steps):
                self.after_step(self.step(step), metrics)

    def batch(self, samples: range) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, labels), each (len(samples), seq_len) on the run's device, of the given global samples: corpus windows
        (``targets``), the needle documents of ``data.needle_mixture`` in place of the samples it picks."""
        ids = self.windows.batch(samples)
        labels = targets(ids, self.masked)
        if self.data.needles is not None:
            ids, labels = self.data.needles.mix(samples, ids, labels)
        return ids.to(self.ctx.device), labels.to(self.ctx.device)

    def step(self, step: int) -> StepResult:
        """Optimizer step ``step`` (0-based): this process's ``accumulation`` micro-batches, forward and backward,
        then clipping and AdamW at the step's learning rate."""
        config, ctx, model = self.config, self.ctx, self.model
        began = time.perf_counter()
        lr = lr_at(step, config.optim, config.train.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.inner_lr_warmup is not None:
            warmup = self.inner_lr_warmup
            self.inner.set_inner_lr_scale(
                inner_lr_multiplier(
                    step, warmup.init_ratio, warmup.steps(config.train.steps, config.optim.warmup_steps)
                )
            )
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for m in range(self.accumulation):
            samples = micro_batch_samples(
                step, m, ctx.rank, ctx.world_size, config.train.micro_batch_size, self.accumulation
            )
            batch, labels = self.batch(samples)  # (micro_batch_size, seq_len) each
            # gradients are reduced over processes once, on the last micro-step
            with dist_utils.gradient_sync(model, m == self.accumulation - 1), self.autocast():
                loss = self.loss_of(batch, labels) / self.accumulation
            loss.backward()
            loss_sum += loss.detach().double()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.inner.parameters(), config.optim.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        # the loss is averaged over processes before the update, so that every process decides alike whether to apply
        # it (the gradient norm is already global)
        dist_utils.all_reduce(loss_sum, ctx)
        loss_value, grad_value = float(loss_sum) / ctx.world_size, float(grad_norm)
        finite = math.isfinite(loss_value) and math.isfinite(grad_value)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        # a signal on any process stops every process after this step (max over processes)
        signum = torch.tensor(float(self.stop.signum), dtype=torch.float64, device=ctx.device)
        dist_utils.all_reduce(signum, ctx, op="max")
        if not finite:
            what = f"the training loss ({loss_value}) or gradient norm ({grad_value}) at step {step + 1} is not finite"
            if config.train.on_nonfinite == "stop":
                raise NonFiniteError(f"{what}: stopped before updating the weights. {self._recovery_hint()}")
            self.console.say(f"{what}: update skipped (train.on_nonfinite: skip)")
        return StepResult(
            done=step + 1,
            loss=loss_value,
            lr=lr,
            grad_norm=grad_value,
            seconds=time.perf_counter() - began,
            signum=int(signum.item()),
            skipped=not finite,
        )

    def _recovery_hint(self) -> str:
        """What the run holds to go back to after a non-finite value, and how to continue from it."""
        existing = ckpt.list_checkpoints(self.run.path)
        if not existing:
            return "No checkpoint was written yet; start again with a lower optim.lr or more optim.warmup_steps."
        stopping = self.config.train.on_nonfinite == "stop"
        skip = ", or set train.on_nonfinite: skip to drop such steps" if stopping else ""
        return (
            f"The newest checkpoint, {existing[-1][1]} (step {existing[-1][0]}), gave a finite loss when it was saved; "
            "continue from it with a lower learning rate: tttlm train --config ... --resume --allow-config-change "
            f"--set optim.lr=...{skip}"
        )

    def _weights_give_finite_loss(self, done: int) -> bool:
        """Whether the current weights give a finite loss on the first micro-batch of step ``done`` (on every
        process): the guard that keeps diverged weights out of checkpoints. Runs no backward and draws no random
        numbers, so the run continues exactly as without it."""
        config, ctx = self.config, self.ctx
        samples = micro_batch_samples(
            done - 1, 0, ctx.rank, ctx.world_size, config.train.micro_batch_size, self.accumulation
        )
        batch, labels = self.batch(samples)
        with torch.no_grad(), self.autocast():
            loss = self.model(input_ids=batch, labels=labels, use_cache=False).loss
        bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0, dtype=torch.float64, device=ctx.device)
        dist_utils.all_reduce(bad, ctx, op="max")
        return not bad.item()

    def after_step(self, result: StepResult, metrics: MetricsWriter) -> None:
        """Log the step; evaluate and checkpoint when due (both after the last step; a checkpoint also after a
        signal); then raise ``TrainingInterrupted`` if a signal came."""
        config, done = self.config, result.done
        last = done == config.train.steps
        tokens_per_s = config.train.batch_tokens / result.seconds
        if last or result.skipped or _due(done, config.log.every):
            record = {
                "step": done,
                "kind": "train",
                "loss": result.loss,
                "lr": result.lr,
                "grad_norm": result.grad_norm,
                "tokens": done * config.train.batch_tokens,
                "tokens_per_s": tokens_per_s,
            }
            metrics.log({**record, "skipped": True} if result.skipped else record)
        self.console.advance(result.loss, tokens_per_s)
        if self.eval_starts and (last or _due(done, config.eval.every)):
            self.last_val = evaluate(
                self.model,
                self.data.val,
                self.eval_starts,
                seq_len=config.data.seq_len,
                micro_batch_size=config.train.micro_batch_size,
                ctx=self.ctx,
                autocast=self.autocast,
                masked=self.masked,
            )
            metrics.log({"step": done, "kind": "eval", "val_loss": self.last_val, "val_ppl": math.exp(self.last_val)})
            self.console.say(f"step {done}: val_loss {self.last_val:.4f}")
        if last or result.signum or _due(done, config.checkpoint.every):
            self.save_checkpoint(done)
        if result.signum:
            raise TrainingInterrupted(self.run.path, done, result.signum)

    def save_checkpoint(self, done: int) -> None:
        """The checkpoint after step ``done`` (every process takes part: sharded state is gathered); ``NonFiniteError``
        instead if the weights give a non-finite loss on the step's batch (diverged, though the step's loss was
        finite), so that no checkpoint holds them."""
        if not self._weights_give_finite_loss(done):
            raise NonFiniteError(
                f"the weights after step {done} give a non-finite loss on that step's batch (training diverged): not "
                f"saving them as a checkpoint. {self._recovery_hint()}"
            )
        batch_tokens = self.config.train.batch_tokens
        train_state = {
            "step": done,
            "samples_seen": done * (batch_tokens // self.config.data.seq_len),
            "tokens_seen": done * batch_tokens,
            "world_size": self.ctx.world_size,
            "val_loss": self.last_val,
            "data": self.data.identity,
        }
        path = ckpt.save(
            self.run.path,
            done,
            model=self.model,
            optimizer=self.optimizer,
            ctx=self.ctx,
            train_state=train_state,
            config=self.config.to_dict(),
            keep_last=self.config.checkpoint.keep_last,
        )
        self.console.say(f"saved checkpoint {path}")

    def export(self) -> Path:
        """Write the final model to the run's ``model/``: weights and config (``save_pretrained``), the data's
        tokenizer and the manifest of their checksums, atomically (``checkpoint.write_export``); every process takes
        part (sharded weights are gathered). Returns that directory."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

        def write(directory: Path) -> None:
            bar_was_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # transformers' "Writing model shards" bar: noise here
            try:
                self.inner.save_pretrained(directory, state_dict=state)
            finally:
                if bar_was_on:
                    hf_logging.enable_progress_bar()
            tokenizer_dir = self.data.dir / TOKENIZER_DIR
            if tokenizer_dir.is_dir():
                for file in tokenizer_dir.iterdir():
                    if file.is_file():
                        shutil.copy2(file, directory / file.name)

        if self.ctx.is_main:
            ckpt.write_export(self.run.model, write, step=self.config.train.steps)
        dist_utils.barrier(self.ctx)
        return self.run.model
