"""Data tests never write to the user's cache: TTTLM_CACHE points into each test's tmp directory.

(``data_testing.REAL_CACHE``, the cache as it was when the tests were collected, is where the tests of the real
packages look for them.)
"""

from __future__ import annotations

from shared_fixtures import _private_cache

__all__ = ["_private_cache"]
