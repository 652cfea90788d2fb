"""Deterministic train/val/test split by document.

A document's split comes from a hash of its split key (its group, else its id) mapped to [0, 1): below ``val``
it is validation, below ``val + test`` test, else train. The split of a document therefore depends on nothing
but its own key (adding documents never moves others), is the same on every machine, and every edition in a group
lands together. One exception keeps small sources useful: in a source of at least 3 split groups where the hash
left validation or test empty, the train group with the smallest hash moves there.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from tttlm.data.documents import SPLITS, Document

DEFAULT_VAL_FRACTION = 0.05
DEFAULT_TEST_FRACTION = 0.05
SALT = "tttlm-split-v1"


def unit_hash(key: str, salt: str = SALT) -> float:
    """A uniform number in [0, 1) from ``key`` (the first 64 bits of sha256)."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_fractions(val: float, test: float) -> None:
    """Raise ValueError unless 0 <= val, test and val + test < 1."""
    if not (0.0 <= val < 1.0 and 0.0 <= test < 1.0 and val + test < 1.0):
        raise ValueError(
            f"split fractions val={val} and test={test} must be >= 0 and add up to less than 1 (e.g. 0.05 and 0.05)"
        )


def assign_splits(
    documents: Sequence[Document], val: float = DEFAULT_VAL_FRACTION, test: float = DEFAULT_TEST_FRACTION
) -> list[str]:
    """The split ("train", "val" or "test") of each document, in order. Splits given by the data are kept."""
    check_fractions(val, test)
    keys = [doc.split_key for doc in documents]
    split_of_key: dict[str, str] = {}
    for key in keys:
        u = unit_hash(key)
        split_of_key[key] = "val" if u < val else "test" if u < val + test else "train"

    # small sources: make sure each has something to validate and test on
    keys_by_source: dict[str, set[str]] = defaultdict(set)
    for doc in documents:
        if doc.split is None:
            keys_by_source[doc.source].add(doc.split_key)
    for source_keys in keys_by_source.values():
        if len(source_keys) < 3:
            continue
        for wanted, fraction in (("val", val), ("test", test)):
            if fraction > 0 and not any(split_of_key[k] == wanted for k in source_keys):
                train_keys = sorted((k for k in source_keys if split_of_key[k] == "train"), key=unit_hash)
                if len(train_keys) > 1:
                    split_of_key[train_keys[0]] = wanted

    out = []
    for doc in documents:
        split = doc.split or split_of_key[doc.split_key]
        if split not in SPLITS:
            raise ValueError(f"document {doc.id!r} has split {split!r}; use one of {', '.join(SPLITS)}")
        out.append(split)
    return out
