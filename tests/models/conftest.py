"""Fixtures shared by the model tests (helpers live in ``model_testing.py``): single-threaded, seeded."""

from shared_fixtures import _seed, _single_thread

__all__ = ["_seed", "_single_thread"]
