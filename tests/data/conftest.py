"""Data tests never write to the user's cache: TTTLM_CACHE points into each test's tmp directory.

(``data_testing.REAL_CACHE``, the cache as it was when the tests were collected, is where the tests of the real
packages look for them.)
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTTLM_CACHE", str(tmp_path / "cache"))
