"""Autouse fixtures for the test folders whose tensors are tiny (``ops/``, ``models/``): their conftests import
these, so every test there runs single-threaded with a seeded global RNG."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> Iterator[None]:
    """Intra-op threading only adds overhead on tiny tensors (10-100x on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed the global RNG for every test (the helpers also use their own seeded generators)."""
    torch.manual_seed(0)
