"""Fixtures shared by the functional TTT op tests (helpers live in ``ttt_testing.py``): single-threaded, seeded."""

from shared_fixtures import _seed, _single_thread

__all__ = ["_seed", "_single_thread"]
