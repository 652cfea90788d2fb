"""One process or many: torchrun's environment decides. DDP by default, FSDP2 (``fully_shard``) on request.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the process group is NCCL on GPUs and gloo on CPUs.
Nothing here knows the architecture: FSDP2 shards each module whose class the model lists in transformers'
``_no_split_modules`` (its blocks), then the root.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tttlm.train.config import ConfigError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: rank, world size, local rank and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda") or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {preference!r} was asked for but CUDA is not available (no GPU or no CUDA build of torch); "
                "set device: auto or cpu (--set device=cpu)"
            )
        index = int(preference.split(":")[1]) if ":" in preference else local_rank
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {preference!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); pick one of them or device: auto"
            )
        return torch.device("cuda", index)
    return torch.device("cpu")


def setup(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (else a single process); pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (if this process joined one)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext, *, fsdp: bool) -> nn.Module:
    """DDP (or FSDP2 with ``fsdp``) around ``model`` when distributed; the model itself otherwise."""
    if not ctx.distributed:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        block_classes = set(getattr(model, "_no_split_modules", None) or [])
        for module in model.modules():
            if module is not model and type(module).__name__ in block_classes:
                fully_shard(module)
        fully_shard(model)
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Let backward all-reduce gradients only when ``enabled`` (the last micro-step of an accumulation)."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
        return
    set_sync = getattr(model, "set_requires_gradient_sync", None)  # FSDP2
    if set_sync is not None:
        set_sync(enabled)
    yield


def all_reduce(tensor: torch.Tensor, ctx: DistContext, op: str = "sum") -> torch.Tensor:
    """Sum (or max) ``tensor`` over all processes, in place; unchanged in a single process."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``obj`` of every process, by rank (sent through the process group, never written to disk)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait for every process."""
    if ctx.distributed:
        dist.barrier()
