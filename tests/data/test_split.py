"""The split by document: deterministic, per document (or group), with small sources kept useful."""

from __future__ import annotations

import pytest

from tttlm.data.documents import Document
from tttlm.data.split import assign_splits, unit_hash


def _docs(n: int, source: str = "s", **kwargs) -> list[Document]:
    return [Document(id=f"{source}/{i}", text="x", source=source, **kwargs) for i in range(n)]


def test_deterministic_and_independent_of_other_documents() -> None:
    docs = _docs(400)
    splits = assign_splits(docs, 0.1, 0.1)
    assert splits == assign_splits(docs, 0.1, 0.1)
    # a document's split does not depend on which other documents exist (large sources: no adjustment)
    assert assign_splits(docs[:200], 0.1, 0.1) == splits[:200]
    assert assign_splits(list(reversed(docs)), 0.1, 0.1) == list(reversed(splits))


def test_fractions_are_respected_on_average() -> None:
    splits = assign_splits(_docs(4000), 0.05, 0.05)
    assert 150 < splits.count("val") < 250
    assert 150 < splits.count("test") < 250


def test_groups_share_a_split() -> None:
    docs = [Document(id=f"s/{i}", text="x", source="s", group=f"g{i % 7}") for i in range(70)]
    splits = assign_splits(docs, 0.3, 0.3)
    by_group: dict[str, set[str]] = {}
    for doc, split in zip(docs, splits, strict=True):
        by_group.setdefault(doc.group, set()).add(split)
    assert all(len(s) == 1 for s in by_group.values())
    assert len({next(iter(s)) for s in by_group.values()}) > 1


def test_small_sources_get_validation_and_test_documents() -> None:
    # 6 novels with 5% fractions: the hash alone would usually leave val and test empty
    docs = _docs(6, source="austen") + _docs(2, source="tiny")
    splits = assign_splits(docs, 0.05, 0.05)
    assert sorted(splits[:6]) == ["test", "train", "train", "train", "train", "val"]
    assert splits[6:] == ["train", "train"]  # fewer than 3 documents: left alone
    # the moved documents are the train documents with the smallest hashes (deterministic)
    by_hash = ["val" if unit_hash(d.id) < 0.05 else "test" if unit_hash(d.id) < 0.1 else "train" for d in docs[:6]]
    candidates = sorted((d.id for d, s in zip(docs, by_hash, strict=False) if s == "train"), key=unit_hash)
    moved = sorted((d.id for d, s, h in zip(docs, splits, by_hash, strict=False) if s != h), key=unit_hash)
    assert moved
    assert moved == candidates[: len(moved)]


def test_splits_given_by_the_data_are_kept() -> None:
    docs = _docs(5, split="test") + _docs(3, source="t", split="val")
    assert assign_splits(docs) == ["test"] * 5 + ["val"] * 3


def test_bad_fractions() -> None:
    with pytest.raises(ValueError, match="add up to less than 1"):
        assign_splits(_docs(3), 0.6, 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        assign_splits(_docs(3), -0.1, 0.1)
