"""Fixtures of the trainer tests: one small packed data directory for the whole session."""

from __future__ import annotations

import pytest
from shared_fixtures import _private_cache
from train_testing import make_data_dir

__all__ = ["_private_cache"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("train-data"))
