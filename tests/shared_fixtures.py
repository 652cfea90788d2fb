"""Autouse fixtures that several test folders share; each folder's conftest imports the ones it wants (importing a
fixture into a conftest makes it that folder's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> Iterator[None]:
    """Intra-op threading only adds overhead on tiny tensors (10-100x on a busy 2-core machine: threads spin
    against each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed the global RNG for every test (the helpers also use their own seeded generators)."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may read or write the user's cache (the default data directory lives there): TTTLM_CACHE points
    into each test's tmp directory."""
    monkeypatch.setenv("TTTLM_CACHE", str(tmp_path / "cache"))
