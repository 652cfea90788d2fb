"""Jane Austen's six novels, from the Debian package ``r-cran-janeaustenr``.

The package is an R data package: each novel is a character vector (one element per line of text) stored in the
R lazy-load database ``janeaustenr/data/Rdata.rdx`` + ``Rdata.rdb`` (``R/sysdata.rdx`` is read too when present).
The ``.rdx`` index is a (gzip-compressed) serialized R list ``list(variables = list(name = c(offset, length), ...),
references = ..., compressed = ...)``; each variable's entry in the ``.rdb`` is a 4-byte big-endian length of the
serialized object, then the object compressed with zlib (for ``compressed`` 2 or 3, a type byte first: ``Z`` zlib,
``2`` bzip2, ``X`` xz, ``0`` none).

R's serialization format itself is read by the ``rdata`` library (``rdata.parser.parse_data`` on the decompressed
bytes, then ``rdata.conversion.convert``); no R is needed. Neither ``rdata`` nor ``pyreadr`` reads the lazy-load
container (``pyreadr`` cannot read the index at all: it skips R lists), so the few lines that slice and decompress
the entries are ours.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rdata

from tttlm.data.documents import Document, normalize_text
from tttlm.data.fetch import FetchError, apt_deb, deb_files, downloads_dir

PACKAGE = "r-cran-janeaustenr"
TITLES = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
_DECOMPRESSORS: dict[bytes, Callable[[bytes], bytes]] = {
    b"Z": zlib.decompress,
    b"2": bz2.decompress,
    b"X": lzma.decompress,
    b"0": bytes,
}


def fetch() -> Path:
    """The ``.deb`` in the cache, downloaded with ``apt-get download`` the first time."""
    return apt_deb(PACKAGE, downloads_dir("austen"))


def _is_database(name: str) -> bool:
    return "/janeaustenr/" in name and name.endswith((".rdx", ".rdb")) and ("/data/" in name or "/R/sysdata." in name)


def _r_object(data: bytes, what: str) -> Any:
    """One serialized R object (gzip/bzip2/xz-compressed or not), converted by rdata to Python and numpy values."""
    try:
        return rdata.conversion.convert(rdata.parser.parse_data(data, extension=".rds"))
    except Exception as error:  # rdata reports malformed input as whatever its parser hit (IndexError, ValueError...)
        raise ValueError(f"{what} is not R serialization data ({type(error).__name__}: {error})") from None


def _entry_bytes(blob: bytes, compressed: int, what: str) -> bytes:
    """The serialized object held by one ``.rdb`` entry (length header checked)."""
    if len(blob) < 5:
        raise ValueError(f"{what} is {len(blob)} bytes, too short for a lazy-load entry")
    size = int.from_bytes(blob[:4], "big")
    body = blob[4:]
    decompress: Callable[[bytes], bytes] = zlib.decompress if compressed else bytes
    if compressed in (2, 3):
        kind, body = body[:1], body[1:]
        if kind not in _DECOMPRESSORS:
            raise ValueError(f"{what} has the unknown compression type {kind!r}")
        decompress = _DECOMPRESSORS[kind]
    try:
        raw = decompress(body)
    except (zlib.error, lzma.LZMAError, OSError, ValueError) as error:
        raise ValueError(f"{what} does not decompress ({error})") from None
    if len(raw) != size:
        raise ValueError(f"{what} decompressed to {len(raw)} bytes, its header says {size}")
    return raw


def read_lazyload(index: bytes, db: bytes, where: str = "lazy-load database") -> dict[str, Any]:
    """Every variable of an R lazy-load database (the ``.rdx`` index and ``.rdb`` entries as bytes), as rdata
    converts them (a character vector becomes a 1-D numpy array of ``str``, ``None`` for NA).

    Raises ``ValueError`` naming ``where`` and the entry when the bytes are not a lazy-load database or an entry
    cannot be decompressed or parsed.
    """
    parsed = _r_object(index, f"{where}: the index")
    if not isinstance(parsed, dict) or "variables" not in parsed:
        raise ValueError(f"{where}: not an R lazy-load index (expected a list with 'variables')")
    compressed = int(np.asarray(parsed.get("compressed", 1)).flat[0])
    out: dict[str, Any] = {}
    for name, position in parsed["variables"].items():
        what = f"{where}: entry {str(name)!r}"
        offset, length = (int(v) for v in np.asarray(position).flat)
        if offset + length > len(db):
            raise ValueError(f"{what} ends at byte {offset + length}, past the end of the .rdb ({len(db)} bytes)")
        out[str(name)] = _r_object(_entry_bytes(db[offset : offset + length], compressed, what), what)
    return out


def _lines(value: Any) -> list[str] | None:
    """The elements of an R character vector (NA as an empty line), or None for any other R object."""
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        return None
    if value.dtype.kind == "U" or (value.dtype == object and all(v is None or isinstance(v, str) for v in value)):
        return ["" if v is None else str(v) for v in value]
    return None


def read_austen(deb: Path) -> list[Document]:
    """Every character vector in the package's data (the six novels), one document each, lines joined by newlines."""
    files = deb_files(deb, _is_database)
    documents: list[Document] = []
    for index_name in sorted(name for name in files if name.endswith(".rdx")):
        db_name = index_name[: -len(".rdx")] + ".rdb"
        if db_name not in files:
            raise FetchError(f"{deb}: {index_name} has no {db_name} beside it")
        try:
            variables = read_lazyload(files[index_name], files[db_name], where=index_name)
        except ValueError as error:
            raise FetchError(
                f"{deb}: cannot read the R data in it: {error}. The file is damaged or not the {PACKAGE} package "
                "we know: delete it and run tttlm data prepare again to download it afresh"
            ) from None
        for name, value in sorted(variables.items()):
            lines = _lines(value)
            if lines is not None:
                documents.append(
                    Document(
                        id=f"austen/{name}",
                        text=normalize_text("\n".join(lines)),
                        source="austen",
                        title=TITLES.get(name, name),
                    )
                )
    if not documents:
        raise FetchError(f"{deb} holds no texts in janeaustenr/data/Rdata.rdx; is it the {PACKAGE} package?")
    return documents
