"""Packed tokens: memory-mapped ids with a document index, and loud refusal of a mismatched tokenizer or model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from data_testing import synthetic_documents

from tttlm.data import (
    DataMismatchError,
    PackedDataset,
    iter_documents,
    load_tokenizer,
    packing,
    prepare_data,
    read_meta,
)
from tttlm.data.packing import pack, token_dtype
from tttlm.data.tokenizer import tokenizer_fingerprint, train_tokenizer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    prepare_data(out, documents=synthetic_documents(24, words=150), vocab_size=300, val_fraction=0.2,
                 test_fraction=0.2, progress=False)  # fmt: skip
    return out


def test_documents_round_trip_through_the_packed_ids(data_dir) -> None:
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    meta = read_meta(data_dir)
    assert meta["dtype"] == "uint16"
    assert meta["vocab_size"] == 300
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)
    for split in ("train", "val", "test"):
        dataset = PackedDataset(data_dir, split)
        docs = list(iter_documents(data_dir, split))
        assert dataset.num_documents == len(docs) > 0
        assert dataset.document_ids() == [d.id for d in docs]
        assert isinstance(dataset.tokens, np.memmap)
        assert dataset.tokens.dtype == np.uint16
        assert dataset.offsets[0] == 0
        assert dataset.offsets[-1] == len(dataset) == meta["splits"][split]["tokens"]
        for i, doc in enumerate(docs):
            ids = dataset.document(i)
            assert ids[-1] == dataset.eos_token_id  # each document ends with end-of-text
            assert tokenizer.decode(ids[:-1].tolist()) == doc.text


def test_matching_tokenizer_and_model_pass(data_dir) -> None:
    dataset = PackedDataset(data_dir / "tokens", "train")  # the tokens directory itself works too
    dataset.check_tokenizer(load_tokenizer(data_dir / "tokenizer"))
    dataset.check_vocab(300)
    dataset.check_vocab(512)  # a larger embedding table can read the ids


def test_mismatched_tokenizer_is_refused(data_dir, tmp_path) -> None:
    other = train_tokenizer(["something else entirely " * 50], tmp_path / "other", vocab_size=300)
    with pytest.raises(DataMismatchError, match="made with another tokenizer"):
        PackedDataset(data_dir, "train").check_tokenizer(other)


def test_too_small_model_vocab_is_refused(data_dir) -> None:
    with pytest.raises(DataMismatchError, match=r"vocab_size 256 .* set the model's vocab_size to 300"):
        PackedDataset(data_dir, "train").check_vocab(256)


def test_truncated_tokens_are_detected(data_dir, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    path = copy / "tokens" / "val.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"should hold .* re-pack"):
        PackedDataset(copy, "val")
    with pytest.raises(FileNotFoundError, match="tttlm data prepare"):
        PackedDataset(tmp_path / "nothing", "train")


def test_token_dtype() -> None:
    assert token_dtype(4096) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
    assert token_dtype(200_000) == np.uint32


def test_wide_vocabularies_pack_as_uint32(data_dir, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the dtype choice is by vocab size; force the wide one to check the uint32 path on a small vocabulary
    monkeypatch.setattr(packing, "token_dtype", lambda vocab: np.dtype(np.uint32))
    wide_dir = tmp_path / "wide"
    shutil.copytree(data_dir / "corpus", wide_dir / "corpus")
    pack(wide_dir, data_dir / "tokenizer", progress=False)
    wide, narrow = PackedDataset(wide_dir, "train"), PackedDataset(data_dir, "train")
    assert wide.tokens.dtype == np.uint32
    assert np.array_equal(np.asarray(wide.tokens), np.asarray(narrow.tokens))
    assert json.loads((wide_dir / "tokens" / "meta.json").read_text())["dtype"] == "uint32"


def test_an_existing_tokenizer_is_copied_in(data_dir, tmp_path) -> None:
    summary = prepare_data(tmp_path / "again", documents=synthetic_documents(8, seed=5, words=50),
                           tokenizer=data_dir / "tokenizer", progress=False)  # fmt: skip
    assert (summary.tokenizer / "tokenizer.json").exists()
    PackedDataset(summary.path, "train").check_tokenizer(load_tokenizer(data_dir / "tokenizer"))
