"""The R serialization / lazy-load reader, on files written by the test-side writer in ``data_testing``."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest
from data_testing import RWriter, lazyload_db, r_serialize

from tttlm.data.rdata import RFormatError, RSymbol, RVector, read_lazyload, read_lazyload_db, unserialize


def test_character_vector_with_na_and_unicode() -> None:
    value = unserialize(r_serialize(["EMMA", "", None, "naïve café"]))
    assert isinstance(value, RVector)
    assert value.kind == "character"
    assert value.values == ["EMMA", "", None, "naïve café"]


def test_latin1_strings_are_decoded() -> None:
    writer = RWriter()
    writer.int(16)
    writer.int(1)
    writer.charsxp("Élise", latin1=True)
    assert unserialize(bytes(writer.out)).values == ["Élise"]


def test_named_list_with_symbol_references() -> None:
    # the "names" symbol is written once and then referenced (REFSXP), as R does
    value = unserialize(r_serialize({"a": [1, 2, -3], "b": {"c": [True, False]}, "d": ["x"]}))
    assert value.names == ["a", "b", "d"]
    parts = value.as_dict()
    assert parts["a"].kind == "integer"
    assert parts["a"].values == [1, 2, -3]
    assert parts["b"].as_dict()["c"].values == [True, False]
    assert parts["d"].values == ["x"]


def test_integer_na() -> None:
    assert unserialize(r_serialize([5, -(2**31)])).values == [5, None]


@pytest.mark.parametrize("compression", ["zlib", "xz"])
def test_lazyload_database(tmp_path, compression: str) -> None:
    novels = {"emma": ["EMMA", "", "By Jane Austen"], "persuasion": ["Persuasion", "", "Chapter 1"]}
    rdx, rdb = lazyload_db(novels, compression)
    variables = read_lazyload(rdx, rdb)
    assert {k: v.values for k, v in variables.items()} == novels
    (tmp_path / "Rdata.rdx").write_bytes(rdx)
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    assert read_lazyload_db(tmp_path / "Rdata.rdx").keys() == novels.keys()


def test_unsupported_objects_raise_or_are_skipped() -> None:
    # an entry holding a closure (type 3): unsupported
    closure = b"X\n" + struct.pack(">iiii", 3, 0, 0, 5) + b"UTF-8" + struct.pack(">i", 3)
    _rdx, rdb = lazyload_db({"text": ["a"]})
    entry = struct.pack(">I", len(closure)) + zlib.compress(closure)
    index = r_serialize({"variables": {"text": [0, len(rdb)], "f": [len(rdb), len(entry)]}, "compressed": [True]})
    with pytest.raises(RFormatError, match="type 3 is not supported"):
        read_lazyload(gzip.compress(index), rdb + entry)
    assert list(read_lazyload(gzip.compress(index), rdb + entry, skip_unsupported=True)) == ["text"]


def test_format_errors() -> None:
    with pytest.raises(RFormatError, match="ASCII"):
        unserialize(b"A\n3\n")
    with pytest.raises(RFormatError, match="truncated"):
        unserialize(r_serialize(["some text"])[:-3])
    with pytest.raises(RFormatError, match="not an R lazy-load index"):
        read_lazyload(gzip.compress(r_serialize(["x"])), b"")
    rdx, rdb = lazyload_db({"emma": ["x"]})
    with pytest.raises(RFormatError, match="past the end"):
        read_lazyload(rdx, rdb[:4])


def test_symbols_are_parsed() -> None:
    writer = RWriter()
    writer.symbol("names")
    assert unserialize(bytes(writer.out)) == RSymbol("names")
