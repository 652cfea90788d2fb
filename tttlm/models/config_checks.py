"""Validation of config values shared by the model configs: each message names the config class, the field,
the value and what would be accepted."""

from __future__ import annotations

import math


def is_number(value: object) -> bool:
    """A finite int or float (bools excluded)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def positive_int(owner: str, name: str, value: object, example: int = 64) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer; got {value!r}. Pass e.g. {name}={example}.")


def positive_number(owner: str, name: str, value: object, example: str | None = None) -> None:
    if not is_number(value) or not value > 0:
        hint = f" Pass e.g. {name}={example}." if example else ""
        raise ValueError(f"{owner}: {name} must be a finite positive number; got {value!r}.{hint}")


def choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
