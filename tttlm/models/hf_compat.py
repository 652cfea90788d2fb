"""What differs between the transformers releases we support (4.56 … 5.x): the name of the cache.

transformers 4.x hands a model its cache as ``past_key_values`` (its Mamba classes: ``cache_params``) and reads it
back from the output field of the same name. transformers 5.24 renamed all three to ``cache``: ``generate`` passes
``cache=`` and reads ``outputs["cache"]``; the old names survive as aliases that log a deprecation warning.

Our models accept the cache under any of the three names (one at a time) and return it in the output field that
the installed release declares (``CACHE_NAME``). Our own code passes a cache to any registry model with
``cache_argument`` and reads it back with ``output_cache``, never by a spelled-out name, so that no call of ours logs
the deprecation warning (transformers' own Llama takes the cache under ``CACHE_NAME`` too).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

CACHE_NAMES = ("past_key_values", "cache", "cache_params")
_OUTPUT_FIELDS = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
CACHE_NAME = "cache" if "cache" in _OUTPUT_FIELDS else "past_key_values"  # "cache" from 5.24 on

Output = TypeVar("Output", bound=ModelOutput)


def given_cache(**candidates: Any) -> Any:
    """The one cache among ``candidates`` (keyword = the name it was passed under, value or None), or None.

    Raises ``ValueError`` when more than one name carries a cache, which would leave it ambiguous which state to
    continue from.
    """
    given = {name: value for name, value in candidates.items() if value is not None}
    if len(given) > 1:
        raise ValueError(f"pass the cache under one name only; got {', '.join(sorted(given))}")
    return next(iter(given.values()), None)


def pop_cache(past_key_values: Any, kwargs: dict[str, Any]) -> Any:
    """The cache a ``forward`` was given: ``past_key_values`` or ``cache``/``cache_params`` taken out of its
    ``kwargs`` (so they are not passed on)."""
    return given_cache(
        past_key_values=past_key_values, cache=kwargs.pop("cache", None), cache_params=kwargs.pop("cache_params", None)
    )


def with_cache(output_class: type[Output], cache: Any, **fields: Any) -> Output:
    """``output_class(**fields)`` with ``cache`` in the field the installed transformers reads."""
    return output_class(**fields, **{CACHE_NAME: cache})


def cache_argument(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` to pass a cache to a model under the installed release's name: ``model(ids,
    **cache_argument(cache))``."""
    return {CACHE_NAME: cache}


def output_cache(outputs: ModelOutput) -> Any:
    """The cache a model (or ``generate``) returned (None when it returned none)."""
    return getattr(outputs, CACHE_NAME, None)
