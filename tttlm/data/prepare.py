"""The whole data pipeline in one call: corpus -> tokenizer -> packed tokens (what ``tttlm data prepare`` runs)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tttlm.data.corpus import CorpusSummary, iter_documents, prepare_corpus
from tttlm.data.documents import Document
from tttlm.data.fetch import cache_dir
from tttlm.data.packing import META, TOKENS_DIR, PackSummary, pack
from tttlm.data.split import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from tttlm.data.tokenizer import DEFAULT_VOCAB_SIZE, load_tokenizer, train_tokenizer

TOKENIZER_DIR = "tokenizer"


def default_data_dir() -> Path:
    """Where ``tttlm data prepare`` writes, and the trainer reads, when no directory is given."""
    return cache_dir() / "data" / "default"


def configured_data_dir(value: str | Path | None) -> Path:
    """The directory a training config's ``data.dir`` names: the path (``~`` expanded), or ``default_data_dir()``
    when it is empty or None."""
    return Path(value).expanduser() if value else default_data_dir()


@dataclass
class PrepareSummary:
    """The corpus, the tokenizer directory and the packed tokens of one ``prepare_data`` run."""

    path: Path
    corpus: CorpusSummary
    tokenizer: Path
    packed: PackSummary


def prepare_data(
    out_dir: Path | str | None = None,
    *,
    sources: Sequence[str] = (),
    inputs: Sequence[Path | str] = (),
    documents: Sequence[Document] | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    tokenizer: Path | str | None = None,
    text_field: str = "text",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    progress: bool = True,
) -> PrepareSummary:
    """Build a complete data directory (default: ``default_data_dir()``) that ``tttlm train`` can read.

    ``sources`` names default-corpus sources, ``inputs`` the user's files, ``documents`` ready ``Document``s (see
    ``prepare_corpus``). **When none of the three is given, the default corpus is used** (every source of
    ``tttlm.data.sources.DEFAULT_SOURCES``, fetched into the cache once): that is the one rule, shared by
    ``tttlm data prepare``, ``tttlm demo`` and the trainer's users. A failed fetch raises ``FetchError`` naming the
    source, the command that failed and what to do.

    The tokenizer is trained on the train split (byte-level BPE of ``vocab_size``) unless ``tokenizer`` names a saved
    transformers tokenizer, which is then copied into the data directory so that the directory is self-contained.
    """
    out = Path(out_dir).expanduser() if out_dir is not None else default_data_dir()
    if not sources and not inputs and documents is None:
        from tttlm.data.sources import DEFAULT_SOURCES

        sources = DEFAULT_SOURCES
    corpus = prepare_corpus(
        out,
        sources=sources,
        inputs=inputs,
        documents=documents,
        text_field=text_field,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    tokenizer_dir = out / TOKENIZER_DIR
    if tokenizer is not None:
        loaded = load_tokenizer(tokenizer)
        if tokenizer_dir.exists() and Path(tokenizer).expanduser().resolve() != tokenizer_dir.resolve():
            shutil.rmtree(tokenizer_dir)
        loaded.save_pretrained(tokenizer_dir)
    else:
        if not corpus.documents.get("train"):
            raise ValueError("the train split is empty, so there is nothing to train a tokenizer on; add documents")
        texts = (doc.text for doc in iter_documents(out, "train"))
        train_tokenizer(texts, tokenizer_dir, vocab_size=vocab_size)
    packed = pack(out, tokenizer_dir, progress=progress)
    return PrepareSummary(path=out, corpus=corpus, tokenizer=tokenizer_dir, packed=packed)


def is_prepared(data_dir: Path | str) -> bool:
    """Whether ``data_dir`` holds a complete data directory (packing, the last step, has written its meta.json)."""
    return (Path(data_dir).expanduser() / TOKENS_DIR / META).exists()


def ensure_prepared(data_dir: Path | str | None = None, say: Callable[[str], None] = print) -> Path:
    """``data_dir`` (default: ``default_data_dir()``), prepared with the default corpus first unless it already is
    complete: what ``tttlm demo`` and ``tttlm ablations`` run before training."""
    data = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if is_prepared(data):
        say(f"using the prepared data in {data}")
    else:
        say(f"preparing the default corpus and tokenizer in {data} (downloads once, then cached)")
        prepare_data(data)
    return data
