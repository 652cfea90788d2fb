"""Fixtures of the trainer tests: one small packed data directory for the whole session."""

from __future__ import annotations

import pytest
from train_testing import make_data_dir


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("train-data"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing here may read or write the user's cache (the default data directory lives there)
    monkeypatch.setenv("TTTLM_CACHE", str(tmp_path / "cache"))
