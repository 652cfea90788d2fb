"""The King James Bible, from the Debian package ``bible-kjv-text``, one document per book.

The package holds ``usr/lib/bible.data``, the "Bible Retrieval System" text file: a header (magic ``EC02``, a
description, then big-endian 32-bit words at byte 0x54: block size, block count, and count + 1 block offsets, the
last being the file size), one 3-byte Unix ``compress`` header just before the first block, and the blocks, each an
LZW stream of ``block size`` bytes of text that shares that header (decoded with the ``unlzw3`` library). The text
is one verse per line, ``<book abbreviation><chapter>:<verse> <text>`` (e.g. ``Ge1:1 In the beginning ...``) after
a title line.
"""

from __future__ import annotations

import itertools
import re
import struct
from pathlib import Path

from unlzw3 import unlzw

from tttlm.data.documents import Document, normalize_text
from tttlm.data.fetch import FetchError, apt_deb, deb_files, downloads_dir

PACKAGE = "bible-kjv-text"
DATA_FILE = "usr/lib/bible.data"
BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel",
    "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job", "Psalms", "Proverbs",
    "Ecclesiastes", "Song of Solomon", "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel",
    "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi",
    "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians",
    "Philippians", "Colossians", "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon",
    "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation",
)  # fmt: skip
_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+:\d+) (.*)$")


def fetch() -> Path:
    """The ``.deb`` in the cache, downloaded with ``apt-get download`` the first time."""
    return apt_deb(PACKAGE, downloads_dir("bible"))


def decode_data_file(data: bytes) -> bytes:
    """The text of a Bible Retrieval System data file (``EC02`` header + ``compress`` blocks)."""
    if data[:4] != b"EC02" or len(data) < 0x5C:
        raise FetchError(f"not a Bible Retrieval System data file (magic {data[:4]!r}, expected b'EC02')")
    block_size, count = struct.unpack(">II", data[0x54:0x5C])
    table_end = 0x5C + 4 * (count + 1)
    if count < 1 or table_end > len(data):
        raise FetchError(f"corrupt Bible data file: {count} blocks do not fit in {len(data)} bytes")
    offsets = struct.unpack(f">{count + 1}I", data[0x5C:table_end])
    if offsets[-1] != len(data) or any(b <= a for a, b in itertools.pairwise(offsets)) or offsets[0] < table_end + 3:
        raise FetchError("corrupt Bible data file: block offsets are not increasing up to the file size")
    header = data[offsets[0] - 3 : offsets[0]]
    blocks = []
    for i, (start, end) in enumerate(itertools.pairwise(offsets)):
        try:
            block = unlzw(header + data[start:end])
        except ValueError as error:  # unlzw3's report of a bad header or code
            raise FetchError(f"corrupt Bible data file: block {i}: {error}") from None
        if i < count - 1 and len(block) != block_size:
            raise FetchError(f"corrupt Bible data file: block {i} holds {len(block)} bytes, expected {block_size}")
        blocks.append(block)
    return b"".join(blocks)


def split_books(text: str) -> list[tuple[str, str]]:
    """(abbreviation, verses) per book, in order; each verse line loses the book abbreviation (``1:1 In the ...``)."""
    books: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = _VERSE.match(line)
        if match is None:
            continue  # the title line
        abbreviation, reference, verse = match.groups()
        if not books or books[-1][0] != abbreviation:
            books.append((abbreviation, []))
        books[-1][1].append(f"{reference} {verse}")
    return [(abbreviation, "\n".join(lines)) for abbreviation, lines in books]


def read_bible(deb: Path) -> list[Document]:
    """The 66 books of the King James Bible, one document each, titled with the book's name."""
    files = deb_files(deb, lambda name: name == DATA_FILE)
    if DATA_FILE not in files:
        raise FetchError(f"{deb} has no {DATA_FILE}; is it the {PACKAGE} package?")
    try:
        text = decode_data_file(files[DATA_FILE])
    except FetchError as error:
        raise FetchError(
            f"{deb}: {DATA_FILE}: {error}. The file is damaged or not the {PACKAGE} package we know: delete it and "
            "run tttlm data prepare again to download it afresh"
        ) from None
    books = split_books(text.decode("latin-1"))
    if not books:
        raise FetchError(f"{deb}: {DATA_FILE} holds no verses")
    names = BOOKS if len(books) == len(BOOKS) else [abbreviation for abbreviation, _ in books]
    documents = []
    for number, ((_, verses), name) in enumerate(zip(books, names, strict=True), 1):
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        text = normalize_text(f"{name}\n\n{verses}")
        documents.append(Document(id=f"bible/{number:02d}_{slug}", text=text, source="bible", title=name))
    return documents
