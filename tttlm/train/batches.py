"""Which tokens each process reads: training windows in a seeded order, and fixed validation windows.

Training data position is one number, the global sample index: optimizer step ``s`` uses samples
``[s * B, (s + 1) * B)`` (B sequences per step), micro-step ``m`` of process ``r`` reads samples
``s * B + (m * world + r) * micro + j``, ``j < micro``. Sample ``g`` is window ``perm_e[g mod n]`` of epoch
``e = g // n``, where the n windows are the non-overlapping ``seq_len`` slices of the train tokens (documents are
concatenated, each ended by the end-of-text id) and ``perm_e`` a permutation seeded by ``(seed, e)``. Nothing is
stateful, so resuming at step s, or running on another number of processes, reads exactly the same batches.
"""

from __future__ import annotations

import numpy as np
import torch

from tttlm.data.packing import PackedDataset


class TrainWindows:
    """Training windows of ``seq_len`` tokens over a packed split, in a seeded order per epoch."""

    def __init__(self, dataset: PackedDataset, seq_len: int, seed: int) -> None:
        self.dataset = dataset
        self.seq_len = seq_len
        self.seed = seed
        self.num_windows = len(dataset) // seq_len
        if self.num_windows == 0:
            raise ValueError(
                f"the {dataset.split} split has {len(dataset)} tokens, fewer than one window of data.seq_len="
                f"{seq_len}; use more data or a shorter seq_len"
            )
        self._epoch = -1
        self._order = np.zeros(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            self._epoch = epoch
        return self._order

    def batch(self, samples: range) -> torch.Tensor:
        """Token ids of the given global sample indices, shape (len(samples), seq_len), dtype long."""
        rows = []
        for sample in samples:
            epoch, position = divmod(sample, self.num_windows)
            start = int(self._permutation(epoch)[position]) * self.seq_len
            rows.append(np.asarray(self.dataset.tokens[start : start + self.seq_len], dtype=np.int64))
        return torch.from_numpy(np.stack(rows))


def micro_batch_samples(step: int, micro: int, rank: int, world: int, micro_batch: int, accumulation: int) -> range:
    """Global sample indices of micro-step ``micro`` of optimizer step ``step`` on process ``rank``."""
    per_step = micro_batch * world * accumulation
    start = step * per_step + (micro * world + rank) * micro_batch
    return range(start, start + micro_batch)


def eval_windows(dataset: PackedDataset, seq_len: int, max_tokens: int, world: int) -> list[int]:
    """Start offsets of the validation windows, spread evenly over the split; a multiple of ``world`` of them.

    Every process must run the same number of forward passes (FSDP gathers parameters inside forward), so the count
    is rounded down to a multiple of the number of processes.
    """
    available = len(dataset) // seq_len
    count = min(available, max(1, max_tokens // seq_len))
    count -= count % world
    if count == 0:
        raise ValueError(
            f"the {dataset.split} split has {len(dataset)} tokens: not enough for one window of {seq_len} tokens per "
            f"process ({world}); use more validation data, a shorter data.seq_len, or eval.tokens: 0 to skip evaluation"
        )
    stride = available // count
    return [i * stride * seq_len for i in range(count)]
