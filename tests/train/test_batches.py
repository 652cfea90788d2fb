"""Which samples each process reads: stateless, a permutation per epoch, and the same global batch for any
number of processes."""

from __future__ import annotations

import numpy as np
import pytest

from tttlm.data import PackedDataset
from tttlm.train.batches import TrainWindows, eval_windows, micro_batch_samples


def test_windows_cover_each_epoch_once(data_dir) -> None:
    dataset = PackedDataset(data_dir, "train")
    windows = TrainWindows(dataset, seq_len=32, seed=3)
    n = windows.num_windows
    assert n == len(dataset) // 32
    first_epoch = windows.batch(range(n)).numpy()
    starts = {bytes(row.tobytes()) for row in first_epoch}
    assert len(starts) == len({bytes(np.asarray(dataset.tokens[i * 32 : (i + 1) * 32], np.int64).tobytes())
                                for i in range(n)})  # fmt: skip
    second_epoch = windows.batch(range(n, 2 * n)).numpy()
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled
    # stateless: any sample can be read again, in any order, by a fresh reader
    again = TrainWindows(dataset, seq_len=32, seed=3)
    assert np.array_equal(again.batch(range(n + 5, n + 9)).numpy(), second_epoch[5:9])
    assert not np.array_equal(TrainWindows(dataset, 32, seed=4).batch(range(8)).numpy(), first_epoch[:8])


def test_global_batch_is_independent_of_the_number_of_processes() -> None:
    def samples(world: int, micro: int, accumulation: int, step: int) -> list[int]:
        out = []
        for rank in range(world):
            for m in range(accumulation):
                out += list(micro_batch_samples(step, m, rank, world, micro, accumulation))
        return sorted(out)

    for step in (0, 5):
        expected = list(range(step * 8, step * 8 + 8))
        assert samples(1, 2, 4, step) == expected
        assert samples(2, 2, 2, step) == expected
        assert samples(4, 1, 2, step) == expected
        assert samples(8, 1, 1, step) == expected


def test_eval_windows(data_dir) -> None:
    dataset = PackedDataset(data_dir, "val")
    starts = eval_windows(dataset, 32, max_tokens=32 * 7, world=2)
    assert len(starts) == 6  # a multiple of the number of processes
    assert starts == sorted(starts)
    assert starts[-1] + 32 <= len(dataset)
    assert starts[1] - starts[0] >= 32  # spread over the split, not only its first document
    with pytest.raises(ValueError, match="not enough for one window"):
        eval_windows(dataset, len(dataset), max_tokens=10**9, world=2)


def test_too_little_training_data(data_dir) -> None:
    with pytest.raises(ValueError, match="fewer than one window"):
        TrainWindows(PackedDataset(data_dir, "train"), seq_len=10**8, seed=0)
