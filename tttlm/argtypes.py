"""Argument types shared by the command-line parsers (``tttlm`` and its sub-commands in ``bench/``, ``eval/``, ...).

Each turns one command-line string into a value or raises ``argparse.ArgumentTypeError`` with what was expected,
which argparse prints as a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence


def _number_list(kind: type, example: str, accept: Callable[[float], bool], wanted: str) -> Callable[[str], list]:
    """A parser of comma-separated ``kind`` values (int or float), each of which ``accept`` holds for; ``example``
    and ``wanted`` describe them in the errors."""

    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {example}; got {text!r}") from None
        if not values or not all(accept(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}")
        return values

    return parse


# comma-separated positive integers, e.g. ``512,2048``
int_list = _number_list(int, "integers such as 512,2048", lambda v: v >= 1, "positive integers")
# comma-separated numbers in [0, 1], e.g. ``0,0.5,1`` (fractions such as needle depths)
unit_list = _number_list(float, "numbers such as 0,0.5,1", lambda v: 0 <= v <= 1, "numbers in [0, 1]")


def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A parser of comma-separated names, each one of ``choices``."""

    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in values if x not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return values

    return parse


def _bounded(kind: type, accept: Callable[[float], bool], wanted: str) -> Callable[[str], int | float]:
    """A parser of one finite ``kind`` (int or float) for which ``accept`` holds; ``wanted`` describes it."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}")
        return value

    return parse


# counts and sizes that cannot be zero (--max-new-tokens, --chunk, ...)
positive_int = _bounded(int, lambda v: v >= 1, "an integer >= 1")
# 0 usually meaning "the default" or "all" (--threads, --top-k, ...)
non_negative_int = _bounded(int, lambda v: v >= 0, "an integer >= 0")
non_negative_float = _bounded(float, lambda v: v >= 0, "a finite number >= 0")
probability = _bounded(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
