"""The training loop: ``train(config) -> run directory``.

One optimizer step = ``accumulation`` micro-steps of ``micro_batch_size`` sequences on each process, the loss of
each micro-step divided by ``accumulation`` (DDP/FSDP average over processes), then global-norm clipping, the
learning rate of the step, and AdamW. Mixed precision: bf16 autocast on CUDA ("auto"), float32 on CPU; "float64"
runs the whole model in double precision (used by tests that compare runs to 1e-10).

Run directory (``out_dir``, default ``runs/<name>``)::

    config.yaml             the resolved config of the run
    metrics.jsonl           train records (loss, lr, grad_norm, tokens, tokens_per_s) and eval records (val_loss)
    tensorboard/            the same as TensorBoard events
    checkpoints/step-N/     see ``tttlm.train.checkpoint``
    model/                  the final weights + config + tokenizer (``from_pretrained``-loadable), at the end
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from tttlm.data.io import apply_umask
from tttlm.data.packing import DataMismatchError, PackedDataset
from tttlm.data.prepare import TOKENIZER_DIR, default_data_dir
from tttlm.data.tokenizer import load_tokenizer
from tttlm.train import checkpoint as ckpt
from tttlm.train import distributed as dist_utils
from tttlm.train.batches import TrainWindows, eval_windows, micro_batch_samples
from tttlm.train.config import ConfigError, TrainConfig, accumulation_steps, load_config
from tttlm.train.factory import make_model
from tttlm.train.metrics import MetricsWriter
from tttlm.train.optim import build_optimizer, lr_at, split_decay
from tttlm.train.run_dir import RunDir


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
        import threading

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


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _data_dir(config: TrainConfig) -> Path:
    return Path(config.data.dir).expanduser() if config.data.dir else default_data_dir()


def _prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool, say: Callable[[str], None]) -> None:
    """Refuse to overwrite a run that has checkpoints unless resuming; start a fresh run's directory clean."""
    existing = ckpt.list_checkpoints(run_dir)
    if existing and not resume:
        raise ConfigError(
            f"{run_dir} already holds checkpoints (newest: {existing[-1][1].name}); pass --resume to continue that "
            "run, or set out_dir (or name) to start a new one"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.remove_temporaries(run_dir)
    if not existing:
        # nothing to continue: drop logs of an earlier attempt that never reached a checkpoint
        shutil.rmtree(RunDir(run_dir).tensorboard, ignore_errors=True)
        if resume:
            say(f"no checkpoint in {run_dir}: starting from step 0")
    RunDir(run_dir).config.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _check_trajectory(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = config.trajectory()
    old = {key: saved.get(key) for key in current}
    if old != current:
        changed = [key for key in current if old[key] != current[key]]
        details = "; ".join(f"{key}: {old[key]} -> {current[key]}" for key in changed)
        raise ConfigError(
            f"the config differs from the one {path} was trained with in {', '.join(changed)} ({details}); an exact "
            "resume needs the same model, data, batch, optimizer and seed (eval, checkpoint and log may change)"
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: PackedDataset,
    starts: list[int],
    *,
    seq_len: int,
    micro_batch_size: int,
    ctx: dist_utils.DistContext,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> float:
    """Mean next-token loss over the windows ``starts`` (shared round-robin between processes)."""
    was_training = model.training
    model.eval()
    mine = starts[ctx.rank :: ctx.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for i in range(0, len(mine), micro_batch_size):
        rows = [np.asarray(dataset.tokens[s : s + seq_len], dtype=np.int64) for s in mine[i : i + micro_batch_size]]
        batch = torch.from_numpy(np.stack(rows)).to(ctx.device)
        with autocast():
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        total[0] += loss.double() * len(rows)
        total[1] += len(rows)
    dist_utils.all_reduce(total, ctx)
    model.train(was_training)
    return float(total[0] / total[1])


def _export_final(model: nn.Module, run_dir: Path, data_dir: Path, ctx: dist_utils.DistContext) -> Path:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out = RunDir(run_dir).model
    if ctx.is_main:
        shutil.rmtree(out, ignore_errors=True)
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' "Writing model shards" bar: noise here
        try:
            dist_utils.unwrap(model).save_pretrained(out, state_dict=state)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        for file in out.iterdir():
            apply_umask(file)  # safetensors >= 0.8 writes model.safetensors 0600 whatever the umask
        tokenizer_dir = data_dir / TOKENIZER_DIR
        if tokenizer_dir.is_dir():
            for file in tokenizer_dir.iterdir():
                if file.is_file():
                    shutil.copy2(file, out / file.name)
    dist_utils.barrier(ctx)
    return out


def train(
    config: TrainConfig | Path | str, *, resume: bool = False, overrides: list[str] = (), progress: bool | None = None
) -> Path:
    """Train a model as ``config`` says (a ``TrainConfig`` or a YAML path); return the run directory.

    With ``resume``, continue from the newest valid checkpoint of the run directory (exactly: the same loss curve as
    an uninterrupted run). ``overrides`` are ``KEY=VALUE`` config changes (YAML path only). Under torchrun, every
    process calls this. Raises ``TrainingInterrupted`` after SIGINT/SIGTERM, once a checkpoint is saved.
    """
    if not isinstance(config, TrainConfig):
        config = load_config(config, list(overrides))
    ctx = dist_utils.setup(config.device)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, ctx, resume=resume, progress=progress)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it
        dist_utils.teardown(ctx)


def _train(config: TrainConfig, ctx: dist_utils.DistContext, *, resume: bool, progress: bool | None) -> Path:
    def say(message: str) -> None:
        if ctx.is_main:
            print(message, file=sys.stderr, flush=True)

    run_dir = config.run_dir
    data_dir = _data_dir(config)
    train_data = PackedDataset(data_dir, "train")
    val_data = PackedDataset(data_dir, "val") if config.eval.tokens else None
    accumulation = accumulation_steps(config, ctx.world_size)
    seq_len = config.data.seq_len
    micro = config.train.micro_batch_size
    step_tokens = config.train.batch_tokens

    overrides = dict(config.model.overrides)
    overrides.setdefault("vocab_size", train_data.vocab_size)
    train_data.check_vocab(overrides["vocab_size"])
    tokenizer_dir = data_dir / TOKENIZER_DIR
    if tokenizer_dir.is_dir():  # the tokenizer shipped with the final model must be the one the data was made with
        train_data.check_tokenizer(load_tokenizer(tokenizer_dir))
    data_identity = {"tokenizer": train_data.fingerprint, "train_sha256": train_data.meta["splits"]["train"]["sha256"]}

    if ctx.is_main:
        _prepare_run_dir(config, run_dir, resume, say)
    dist_utils.barrier(ctx)

    _seed_everything(config.seed)
    model = make_model(config.model.arch, config.model.size, overrides)
    # the data's end-of-text token starts and ends documents; generate() reads it from the generation config
    for settings in (model.config, getattr(model, "generation_config", None)):
        if settings is not None:
            settings.bos_token_id = settings.eos_token_id = train_data.eos_token_id
    dtype = torch.float64 if config.precision == "float64" else torch.float32
    model.to(device=ctx.device, dtype=dtype)
    model.train()
    model = dist_utils.wrap(model, ctx, fsdp=config.distributed.fsdp)
    inner = dist_utils.unwrap(model)
    optimizer = build_optimizer(inner, config.optim)
    # each process its own stream from here on (model init above was identical everywhere)
    _seed_everything(config.seed + 1000003 * ctx.rank)

    start_step = 0
    if resume:
        found = ckpt.latest_valid(run_dir, report=say)
        if found is not None:
            path, payload = found
            _check_trajectory(payload["config"], config, path)
            if payload["train_state"].get("data", data_identity) != data_identity:
                raise DataMismatchError(
                    f"the data in {data_dir} changed since {path} was written (other tokens or tokenizer); resume "
                    "with the data it was trained on, or start a new run"
                )
            ckpt.load(path, payload, model=model, optimizer=optimizer, ctx=ctx)
            start_step = payload["step"]
            saved_world = payload["train_state"].get("world_size", 1)
            extra = "" if saved_world == ctx.world_size else f" (saved with {saved_world} processes: RNG streams reset)"
            say(f"resuming from {path} (step {start_step}, checksums verified){extra}")

    autocast = _autocast(config.precision, ctx.device)
    windows = TrainWindows(train_data, seq_len, config.seed)
    eval_starts = eval_windows(val_data, seq_len, config.eval.tokens, ctx.world_size) if val_data is not None else []
    decay, no_decay = split_decay(inner, config.optim.no_decay)
    n_params = sum(p.numel() for p in inner.parameters())
    say(
        f"{config.model.arch} {config.model.size}: {n_params / 1e6:.2f}M parameters ({len(decay)} tensors with weight "
        f"decay, {len(no_decay)} without), vocab {overrides['vocab_size']}\n"
        f"data {data_dir}: {len(train_data):,} train tokens ({windows.num_windows:,} windows of {seq_len}); "
        f"{ctx.world_size} process(es) on {ctx.device}, precision {config.precision}\n"
        f"{config.train.steps} steps x {step_tokens:,} tokens = {micro} sequences x {accumulation} micro-steps x "
        f"{ctx.world_size} process(es); run dir {run_dir}"
    )

    metrics = MetricsWriter(
        run_dir, enabled=ctx.is_main, tensorboard=config.log.tensorboard, resume_step=start_step if resume else None
    )
    show_bar = ctx.is_main and (config.log.progress if progress is None else progress)
    bar = tqdm(
        total=config.train.steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not show_bar,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    stop = _StopFlag()

    def note(message: str) -> None:  # above the progress bar when there is one
        if show_bar:
            bar.write(message, file=sys.stderr)
        else:
            say(message)

    tokens_seen = start_step * step_tokens
    last_val: float | None = None

    def save_checkpoint(step: int) -> Path:
        train_state = {
            "step": step,
            "samples_seen": step * (step_tokens // seq_len),
            "tokens_seen": step * step_tokens,
            "world_size": ctx.world_size,
            "val_loss": last_val,
            "data": data_identity,
        }
        path = ckpt.save(
            run_dir,
            step,
            model=model,
            optimizer=optimizer,
            ctx=ctx,
            train_state=train_state,
            config=config.to_dict(),
            keep_last=config.checkpoint.keep_last,
        )
        note(f"saved checkpoint {path}")
        return path

    try:
        with stop.installed():
            for step in range(start_step, config.train.steps):
                began = time.perf_counter()
                lr = lr_at(step, config.optim, config.train.steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
                for m in range(accumulation):
                    samples = micro_batch_samples(step, m, ctx.rank, ctx.world_size, micro, accumulation)
                    batch = windows.batch(samples).to(ctx.device)
                    with dist_utils.gradient_sync(model, m == accumulation - 1), autocast():
                        loss = model(input_ids=batch, labels=batch, use_cache=False).loss / accumulation
                    loss.backward()
                    loss_sum += loss.detach().double()
                grad_norm = torch.nn.utils.clip_grad_norm_(inner.parameters(), config.optim.grad_clip)
                if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
                    grad_norm = grad_norm.full_tensor()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

                flags = torch.tensor([float(stop.signum), 0.0], dtype=torch.float64, device=ctx.device)
                dist_utils.all_reduce(loss_sum, ctx)
                dist_utils.all_reduce(flags, ctx, op="max")
                loss_value = float(loss_sum) / ctx.world_size
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"the training loss became {loss_value} at step {step + 1}; lower optim.lr or raise "
                        "optim.warmup_steps (the last checkpoint is untouched)"
                    )
                done = step + 1
                tokens_seen += step_tokens
                seconds = time.perf_counter() - began
                if done % config.log.every == 0 or done == config.train.steps:
                    metrics.log(
                        {
                            "step": done,
                            "kind": "train",
                            "loss": loss_value,
                            "lr": lr,
                            "grad_norm": float(grad_norm),
                            "tokens": tokens_seen,
                            "tokens_per_s": step_tokens / seconds,
                        }
                    )
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{step_tokens / seconds:,.0f}", refresh=False)
                bar.update(1)

                last = done == config.train.steps
                if eval_starts and (last or (config.eval.every and done % config.eval.every == 0)):
                    last_val = evaluate(
                        model,
                        val_data,
                        eval_starts,
                        seq_len=seq_len,
                        micro_batch_size=micro,
                        ctx=ctx,
                        autocast=autocast,
                    )
                    metrics.log({"step": done, "kind": "eval", "val_loss": last_val, "val_ppl": math.exp(last_val)})
                    note(f"step {done}: val_loss {last_val:.4f}")
                interrupted = int(flags[0].item())
                if last or interrupted or (config.checkpoint.every and done % config.checkpoint.every == 0):
                    save_checkpoint(done)
                if interrupted:
                    raise TrainingInterrupted(run_dir, done, interrupted)
    finally:
        bar.close()
        metrics.close()
    if start_step < config.train.steps or not RunDir(run_dir).model.exists():
        out = _export_final(model, run_dir, data_dir, ctx)
        say(f"done: {config.train.steps} steps; final model in {out}")
    return run_dir
