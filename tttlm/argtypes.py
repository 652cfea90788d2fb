"""Argument types shared by the command-line parsers (``tttlm`` and its sub-commands in ``bench/``, ``eval/``, ...).

Each turns one command-line string into a value or raises ``argparse.ArgumentTypeError`` with what was expected,
which argparse prints as a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``512,2048``."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 512,2048; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers; got {text!r}")
    return values


def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A parser of comma-separated names, each one of ``choices``."""

    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in values if x not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return values

    return parse
