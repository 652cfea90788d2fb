"""Building a corpus directory: JSONL per split, a manifest with sizes and checksums, empties and duplicates out."""

from __future__ import annotations

import hashlib
import json

import pytest
from data_testing import synthetic_documents

from tttlm.data.corpus import MANIFEST, iter_documents, prepare_corpus
from tttlm.data.documents import SPLITS, Document


def test_corpus_files_and_manifest(tmp_path) -> None:
    docs = synthetic_documents(30, words=60)
    summary = prepare_corpus(tmp_path, documents=docs, val_fraction=0.2, test_fraction=0.2)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    records = {r["document"]: r for r in manifest["documents"]}
    assert set(records) == {d.id for d in docs}
    for doc in docs:
        record = records[doc.id]
        assert record["bytes"] == len(doc.text.encode())
        assert record["sha256"] == hashlib.sha256(doc.text.encode()).hexdigest()
        assert record["source"] == "synthetic"
        assert record["split"] in SPLITS
    read_back = {split: list(iter_documents(tmp_path, split)) for split in SPLITS}
    assert sum(len(v) for v in read_back.values()) == 30
    for split, split_docs in read_back.items():
        assert all(records[d.id]["split"] == split for d in split_docs)
        assert summary.documents.get(split, 0) == len(split_docs)
        assert manifest["totals"][split]["documents"] == len(split_docs)
    assert all(summary.documents[s] > 0 for s in SPLITS)
    # the same input gives the same files
    first = (tmp_path / "corpus" / "train.jsonl").read_bytes()
    prepare_corpus(tmp_path, documents=docs, val_fraction=0.2, test_fraction=0.2)
    assert (tmp_path / "corpus" / "train.jsonl").read_bytes() == first


def test_empty_and_duplicate_documents_are_dropped(tmp_path) -> None:
    docs = [
        Document("s/a", "same text\n", "s"),
        Document("s/b", "same text\n", "s"),
        Document("s/c", "  \n", "s"),
        Document("s/d", "other\n", "s"),
    ]
    summary = prepare_corpus(tmp_path, documents=docs)
    assert summary.dropped_empty == ["s/c"]
    assert summary.dropped_duplicates == [("s/b", "s/a")]
    dropped = json.loads((tmp_path / MANIFEST).read_text())["dropped"]
    assert dropped == {"empty": ["s/c"], "duplicates": [{"document": "s/b", "same_text_as": "s/a"}]}


def test_duplicate_ids_and_empty_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="appears twice"):
        prepare_corpus(tmp_path, documents=[Document("s/a", "x", "s"), Document("s/a", "y", "s")])
    with pytest.raises(ValueError, match="every document is empty"):
        prepare_corpus(tmp_path, documents=[Document("s/a", " ", "s")])
    with pytest.raises(ValueError, match="unknown corpus source"):
        prepare_corpus(tmp_path, sources=["gutenberg"])


def test_user_inputs(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(4):
        (tmp_path / "in" / f"{i}.txt").write_text(f"text number {i}\n")
    summary = prepare_corpus(tmp_path / "out", inputs=[tmp_path / "in"])
    assert sum(summary.documents.values()) == 4
    sources = json.loads((tmp_path / "out" / MANIFEST).read_text())["sources"]
    assert sources[0]["name"].startswith("input:")
    assert sources[0]["documents"] == 4
