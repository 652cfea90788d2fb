"""The byte-level BPE: trained locally, loadable by transformers from the directory, exact round trips."""

from __future__ import annotations

import json

import pytest
from data_testing import synthetic_text
from transformers import AutoTokenizer

from tttlm.data.tokenizer import END_OF_TEXT, end_of_text_id, load_tokenizer, tokenizer_fingerprint, train_tokenizer

TEXTS = [synthetic_text(i, 300) for i in range(6)]


def test_train_save_and_load(tmp_path) -> None:
    tokenizer = train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=300)
    assert len(tokenizer) == 300
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert len(loaded) == 300
    assert loaded.eos_token == END_OF_TEXT
    assert end_of_text_id(loaded) == loaded.convert_tokens_to_ids(END_OF_TEXT)
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loadable by transformers 4 and 5
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tokenizer)


@pytest.mark.parametrize("text", ["Hello, world!", "  leading spaces\n\ttabs", "naïve café — “quotes” 😀 漢字"])
def test_round_trip_is_exact(tmp_path, text: str) -> None:
    tokenizer = train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=300)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_training_is_deterministic(tmp_path) -> None:
    a = train_tokenizer(TEXTS, tmp_path / "a", vocab_size=320)
    b = train_tokenizer(TEXTS, tmp_path / "b", vocab_size=320)
    c = train_tokenizer(TEXTS[:3], tmp_path / "c", vocab_size=320)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(c)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=">= 257"):
        train_tokenizer(TEXTS, tmp_path / "t", vocab_size=100)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot load a transformers tokenizer"):
        load_tokenizer(tmp_path / "empty")
