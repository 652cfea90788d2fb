"""Read R lazy-load databases (``*.rdx`` index + ``*.rdb`` entries) and the R serialization format they use.

R packages keep their data sets in a lazy-load database: ``Rdata.rdx`` (or ``sysdata.rdx``) is a compressed,
serialized R list ``list(variables = list(name = c(offset, length), ...), references = ..., compressed = ...)``;
each variable's entry in ``Rdata.rdb`` is a 4-byte big-endian uncompressed length, then the compressed bytes
(zlib, or for ``compressed = 2/3`` a one-byte type — ``Z`` zlib, ``2`` bzip2, ``X`` xz, ``0`` none — first), and
the decompressed bytes are one object in R's XDR serialization (``X\\n``, format versions 2 and 3).

Only the parts of the format that data packages use are read: NULL, symbols, pairlists (attributes), character,
logical, integer, double, complex and raw vectors, lists, references, and the compact ALTREP sequences and wrappers.
Environments, closures and byte code raise ``RFormatError`` (a data set of text never contains them).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# SEXP types (R internals, "Serialization Formats")
NILSXP, SYMSXP, LISTSXP, LANGSXP, CHARSXP = 0, 1, 2, 6, 9
LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 10, 13, 14, 15, 16
VECSXP, EXPRSXP, RAWSXP = 19, 20, 24
ALTREP_SXP, ATTRLISTSXP, ATTRLANGSXP = 238, 239, 240
EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, NILVALUE_SXP, REFSXP = 242, 241, 253, 254, 255
NA_INTEGER = -(2**31)
_VECTOR_KINDS = (STRSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, RAWSXP, VECSXP, EXPRSXP)
_LATIN1_MASK = 1 << 2
_HAS_ATTR, _HAS_TAG = 1 << 9, 1 << 10


class RFormatError(ValueError):
    """The bytes are not R serialization data this reader understands."""


@dataclass
class RSymbol:
    """An R symbol (a name), as used for attribute and list tags."""

    name: str


@dataclass
class RVector:
    """An R vector: ``kind`` is "character", "logical", "integer", "double", "complex", "raw" or "list"."""

    kind: str
    values: list[Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str | None] | None:
        """The ``names`` attribute, or None."""
        names = self.attributes.get("names")
        return names.values if isinstance(names, RVector) else None

    def as_dict(self) -> dict[str, Any]:
        """The elements keyed by their names (a named R list or vector)."""
        if self.names is None:
            raise RFormatError(f"this R {self.kind} vector has no names")
        return dict(zip(self.names, self.values, strict=True))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RFormatError(f"truncated R data: needed {n} bytes at offset {self.pos}, only {len(self.data)} total")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two 32-bit halves
            upper, lower = self.int(), self.int()
            return (upper << 32) + lower
        return n

    def ints(self, n: int) -> list[int | None]:
        return [None if v == NA_INTEGER else v for v in struct.unpack(f">{n}i", self.take(4 * n))]

    def doubles(self, n: int) -> list[float]:
        return list(struct.unpack(f">{n}d", self.take(8 * n)))

    def charsxp(self, flags: int) -> str | None:
        n = self.int()
        if n == -1:
            return None  # NA_character_
        raw = self.take(n)
        levels = flags >> 12
        return raw.decode("latin-1" if levels & _LATIN1_MASK else "utf-8", errors="replace")

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & _HAS_ATTR), bool(flags & _HAS_TAG)
        if kind in (NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP):
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int()
            if not 1 <= index <= len(self.refs):
                raise RFormatError(f"R reference {index} points past the {len(self.refs)} objects read so far")
            return self.refs[index - 1]
        if kind == SYMSXP:
            symbol = RSymbol(self.item() or "")
            self.refs.append(symbol)
            return symbol
        if kind in (LISTSXP, LANGSXP, ATTRLISTSXP, ATTRLANGSXP):
            return self.pairlist(flags)
        if kind == CHARSXP:
            return self.charsxp(flags)
        if kind == ALTREP_SXP:
            return self.altrep()
        vector = self.vector(kind)
        if has_attr:
            vector.attributes = self.attributes()
        if has_tag:
            raise RFormatError(f"unexpected tag on an R vector of type {kind}")
        return vector

    def vector(self, kind: int) -> RVector:
        if kind not in _VECTOR_KINDS:
            raise RFormatError(
                f"R object type {kind} is not supported (only data vectors, lists and attributes are read); "
                "is this a data set of text?"
            )
        n = self.length()
        if kind == STRSXP:
            values = []
            for _ in range(n):
                flags = self.int()
                if flags & 0xFF != CHARSXP:
                    raise RFormatError(f"a character vector holds an element of type {flags & 0xFF}, not CHARSXP")
                values.append(self.charsxp(flags))
            return RVector("character", values)
        if kind == LGLSXP:
            return RVector("logical", [None if v is None else bool(v) for v in self.ints(n)])
        if kind == INTSXP:
            return RVector("integer", self.ints(n))
        if kind == REALSXP:
            return RVector("double", self.doubles(n))
        if kind == CPLXSXP:
            parts = self.doubles(2 * n)
            return RVector("complex", [complex(parts[i], parts[i + 1]) for i in range(0, 2 * n, 2)])
        if kind == RAWSXP:
            return RVector("raw", list(self.take(n)))
        return RVector("list", [self.item() for _ in range(n)])

    def pairlist(self, flags: int) -> dict[str, Any]:
        # A pairlist is a chain of (attributes?, tag?, car, cdr); read it iteratively into {tag: value}.
        out: dict[str, Any] = {}
        position = 0
        while True:
            if flags & _HAS_ATTR:
                self.attributes()
            tag = self.item() if flags & _HAS_TAG else None
            key = tag.name if isinstance(tag, RSymbol) else str(position)
            out[key] = self.item()
            position += 1
            flags = self.int()
            kind = flags & 0xFF
            if kind == NILVALUE_SXP:
                return out
            if kind not in (LISTSXP, LANGSXP, ATTRLISTSXP, ATTRLANGSXP):
                raise RFormatError(f"a pairlist continues with an object of type {kind}")

    def attributes(self) -> dict[str, Any]:
        attributes = self.item()
        if not isinstance(attributes, dict):
            raise RFormatError("R attributes must be a pairlist")
        return attributes

    def altrep(self) -> RVector:
        info = self.item()
        state = self.item()
        attributes = self.item()
        values = list(info.values()) if isinstance(info, dict) else []
        class_name = values[0].name if values and isinstance(values[0], RSymbol) else "?"
        if class_name in ("compact_intseq", "compact_realseq") and isinstance(state, RVector):
            n, start, step = (int(v) for v in state.values[:3])
            seq = [start + i * step for i in range(n)]
            vector = RVector("integer" if class_name == "compact_intseq" else "double", seq)
        elif class_name.startswith("wrap_") and isinstance(state, RVector) and state.values:
            vector = state.values[0]
        else:
            raise RFormatError(f"the ALTREP class {class_name!r} is not supported")
        if isinstance(attributes, dict):
            vector.attributes = attributes
        return vector


def unserialize(data: bytes) -> Any:
    """Decode one object in R's XDR serialization format (what ``serialize()`` / lazy-load databases write).

    Returns None for NULL, ``RVector`` for vectors and lists, ``dict`` for pairlists, ``RSymbol`` for symbols.
    """
    if data[:2] != b"X\n":
        kind = {b"A\n": "ASCII", b"B\n": "native binary"}.get(data[:2], "an unknown")
        raise RFormatError(f"expected R's XDR serialization (starts with 'X\\n'); this is {kind} format")
    reader = _Reader(data)
    reader.pos = 2
    version = reader.int()
    reader.int()  # R version that wrote it
    reader.int()  # minimal R version that can read it
    if version == 3:
        reader.take(reader.int())  # native encoding name, e.g. "UTF-8"
    elif version != 2:
        raise RFormatError(f"R serialization format version {version} is not supported (2 or 3)")
    return reader.item()


def _decompress_file(raw: bytes) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:3] == b"BZh":
        return bz2.decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    return raw


def _decompress_entry(blob: bytes, compressed: int) -> bytes:
    if len(blob) < 5:
        raise RFormatError(f"lazy-load entry of {len(blob)} bytes is too short")
    size = struct.unpack(">I", blob[:4])[0]
    body = blob[4:]
    if compressed in (2, 3):
        kind, body = body[:1], body[1:]
        decoders = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}
        if kind not in decoders:
            raise RFormatError(f"unknown lazy-load compression type {kind!r}")
        out = decoders[kind](body)
    elif compressed:
        out = zlib.decompress(body)
    else:
        out = body
    if len(out) != size:
        raise RFormatError(f"lazy-load entry decompressed to {len(out)} bytes, its header says {size}")
    return out


def read_lazyload(index: bytes, db: bytes, *, skip_unsupported: bool = False, where: str = "") -> dict[str, Any]:
    """All variables of an R lazy-load database given as bytes (the ``.rdx`` index and the ``.rdb`` entries).

    Raises ``RFormatError`` when the bytes are not a lazy-load database or an entry cannot be decoded; with
    ``skip_unsupported``, variables holding objects this reader does not support (functions, environments) are
    left out instead. ``where`` names the files in error messages.
    """
    where = where or "lazy-load database"
    parsed = unserialize(_decompress_file(index))
    if not isinstance(parsed, RVector) or parsed.names is None or "variables" not in parsed.names:
        raise RFormatError(f"{where}: not an R lazy-load index (expected a list with 'variables')")
    parts = parsed.as_dict()
    compressed_value = parts.get("compressed")
    compressed = int(compressed_value.values[0]) if isinstance(compressed_value, RVector) else 1
    out: dict[str, Any] = {}
    for name, position in parts["variables"].as_dict().items():
        offset, length = (int(v) for v in position.values)
        if offset + length > len(db):
            raise RFormatError(f"{where}: entry {name!r} ends at byte {offset + length}, past the end ({len(db)})")
        raw = _decompress_entry(db[offset : offset + length], compressed)
        try:
            out[name] = unserialize(raw)
        except RFormatError:
            if not skip_unsupported:
                raise
    return out


def read_lazyload_db(
    rdx: Path | str, rdb: Path | str | None = None, *, skip_unsupported: bool = False
) -> dict[str, Any]:
    """``read_lazyload`` on files: ``rdb`` defaults to ``rdx`` with the suffix ``.rdb``."""
    rdx = Path(rdx)
    rdb = rdx.with_suffix(".rdb") if rdb is None else Path(rdb)
    return read_lazyload(rdx.read_bytes(), rdb.read_bytes(), skip_unsupported=skip_unsupported, where=str(rdx))
