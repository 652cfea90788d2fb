"""Peak memory of a call: the CUDA allocator's peak on a GPU, the peak of live tensor storage on any device.

The CPU has no allocator statistics, and a process's peak RSS mixes in the interpreter, the libraries and the
allocator's slack. ``TensorMemory`` instead sees every tensor an operation creates (a ``TorchDispatchMode``, which
also runs in the autograd engine's backward) and counts its storage's bytes until the storage is freed, so its
peak is the most tensor memory that was alive at once during the call, counted exactly (alignment padding and
allocator caching excluded). Storage allocated before the call (the weights) is not counted.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemory(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while the mode is active (``with TensorMemory() as m``).

    ``peak``: the most bytes alive at once; ``live``: the bytes still alive (e.g. the gradients after a backward).
    A storage is counted once however many tensors view it, and uncounted when it is freed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}  # id of a live storage -> its bytes
        self._refs: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key, size = id(storage), storage.nbytes()
        if key in self._sizes or size == 0:
            return
        self._sizes[key] = size
        # a storage's Python object lives exactly as long as the storage (PyTorch keeps the two together)
        self._refs[key] = weakref.ref(storage, lambda _, key=key: self._free(key))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)
        del self._refs[key]


def peak_bytes(call: Callable[[], object], device: torch.device) -> int:
    """The peak memory ``call()`` allocated above what was allocated before it, in bytes: on CUDA
    ``torch.cuda.max_memory_allocated`` (the allocator's view, rounded to its blocks), elsewhere the peak of live
    tensor storage (``TensorMemory``)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with TensorMemory() as memory:
        call()
    return memory.peak
