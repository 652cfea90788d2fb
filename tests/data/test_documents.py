"""Reading the user's own data: text files, directories, JSONL, parquet and datasets directories."""

from __future__ import annotations

import json

import pytest

from tttlm.data.documents import normalize_text, read_path


def test_text_file_and_directory(tmp_path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "b.txt").write_text("second\r\n")
    (tmp_path / "notes" / "sub").mkdir()
    (tmp_path / "notes" / "sub" / "a.md").write_text("first")
    (tmp_path / "notes" / "image.png").write_bytes(b"\x89PNG")  # ignored in a directory
    docs = list(read_path(tmp_path / "notes"))
    assert [(d.id, d.source, d.text) for d in docs] == [
        ("user:notes/b.txt", "user:notes", "second\n"),
        ("user:notes/sub/a.md", "user:notes", "first\n"),
    ]
    (single,) = read_path(tmp_path / "notes" / "b.txt")
    assert single.id == "user:b/b.txt"
    assert single.title == "b"


def test_jsonl_fields(tmp_path) -> None:
    rows = [
        {"text": "one", "id": "x1", "title": "One", "split": "validation"},
        {"text": "two", "group": "g"},
        {"text": "three", "split": "train"},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = list(read_path(path))
    assert [d.id for d in docs] == ["user:rows/rows.jsonl/x1", "user:rows/rows.jsonl/2", "user:rows/rows.jsonl/3"]
    assert [d.split for d in docs] == ["val", None, "train"]
    assert docs[0].title == "One"
    assert docs[1].group == "user:rows/rows.jsonl/g"


def test_jsonl_other_text_field(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"content": "hello"}) + "\n")
    with pytest.raises(ValueError, match=r"no 'text' field .* --text-field"):
        list(read_path(path))
    assert [d.text for d in read_path(path, text_field="content")] == ["hello\n"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json}\n", "not valid JSON"), ("[1, 2]\n", "expected a JSON object"), ('{"text": 3}\n', "must be a string")],
)
def test_bad_jsonl(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        list(read_path(path))


def test_bad_paths(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_path(tmp_path / "missing.txt"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown file type"):
        list(read_path(tmp_path / "data.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no text"):
        list(read_path(tmp_path / "empty"))
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "x", "split": "holdout"}) + "\n")
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        list(read_path(tmp_path / "s.jsonl"))


def test_parquet(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["alpha", "beta"], "id": ["a", "b"]}), tmp_path / "t.parquet")
    docs = list(read_path(tmp_path / "t.parquet"))
    assert [(d.id, d.text) for d in docs] == [("user:t/t.parquet/a", "alpha\n"), ("user:t/t.parquet/b", "beta\n")]


def test_datasets_directory(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
            "validation": datasets.Dataset.from_dict({"text": ["c"]}),
        }
    )
    splits.save_to_disk(str(tmp_path / "ds"))
    docs = list(read_path(tmp_path / "ds"))
    assert [(d.id, d.split) for d in docs] == [("user:ds/train/0", "train"), ("user:ds/train/1", "train"),
                                                 ("user:ds/validation/0", "val")]  # fmt: skip


def test_normalize_text() -> None:
    assert normalize_text("\ufeffa\r\nb\rc  \n\n") == "a\nb\nc\n"
