"""Fixtures of the experiment-runner tests: one small packed data directory for the whole session."""

from __future__ import annotations

import pytest
from shared_fixtures import _private_cache, _single_thread
from synthetic_data import WORDS, make_synthetic_data_dir

__all__ = ["_private_cache", "_single_thread"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return make_synthetic_data_dir(
        tmp_path_factory.mktemp("experiment-data"), 16, 600, len(WORDS), sentence_end=0.1, val_fraction=0.15
    )
