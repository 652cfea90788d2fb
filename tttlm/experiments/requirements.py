"""Features an arm may need that the project does not have yet: each is checked against the code as it is, so an arm
that needs one is refused with what is missing (never run with a stand-in), and runs once the feature lands.

``missing(name)`` is None when the feature is there, else one sentence saying what is missing and who builds it.
"""

from __future__ import annotations

from collections.abc import Callable


def _kvb_simplified() -> str | None:
    from tttlm.models import ARCHS

    if "ttt-kvb-simplified" in ARCHS:
        return None
    return (
        "the simplified TTT-KVB of the second paper's §2.4 (the second row of its Table 1) has no arch or switch "
        "yet: LaCT's TTT-KVB (ttt-kvb) with its simplifications as options"
    )


def _needle_data() -> str | None:
    from tttlm.train.config import DataConfig

    if "needle_mixture" in DataConfig.__dataclass_fields__:
        return None
    return (
        "a training mixture with synthetic needle documents (data.needle_mixture, issue 19) does not exist yet; "
        "without it no model at this scale learns retrieval and S-NIAH is 0 for every arch"
    )


REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "kvb-simplified": _kvb_simplified,
    "needle-data": _needle_data,
}


def missing(name: str) -> str | None:
    """Why feature ``name`` (a key of ``REQUIREMENTS``) is not available, or None when it is."""
    if name not in REQUIREMENTS:
        raise ValueError(f"unknown requirement {name!r}; known: {', '.join(REQUIREMENTS)}")
    return REQUIREMENTS[name]()
