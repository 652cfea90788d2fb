"""Packing token ids into memory-mapped arrays, and reading them back.

``pack`` tokenizes every document of a prepared corpus, appends the end-of-text id after each, and writes per split::

    tokens/{split}.bin       the ids back to back, uint16 when the vocabulary fits (<= 65536 ids), else uint32
    tokens/{split}.idx.npy   int64 offsets, shape (documents + 1,): document i is bin[offsets[i]:offsets[i + 1]]
    tokens/{split}.ids.json  the document ids, in order
    tokens/meta.json         dtype, vocab size, end-of-text id, the tokenizer's fingerprint and path, sizes, and the
                             sha256s of each split's .bin and .idx.npy (the latter absent in data packed before it)

``PackedDataset`` memory-maps one split, refuses a tokenizer or model whose vocabulary does not match, and reports
files that are truncated or differ from their sha256 (``verify_checksum``) as ``CorruptDataError``.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from tttlm.data.corpus import CORPUS_DIR, iter_documents
from tttlm.data.documents import SPLITS
from tttlm.data.io import replace_dir, sha256_file, write_json_atomic
from tttlm.data.tokenizer import end_of_text_id, load_tokenizer, tokenizer_fingerprint

TOKENS_DIR = "tokens"
META = "meta.json"
FORMAT = 1


class DataMismatchError(ValueError):
    """Packed data and a tokenizer or model do not belong together."""


class CorruptDataError(ValueError):
    """Packed token files are missing, truncated, unreadable or differ from their recorded sha256."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _tokenizer_and_path(tokenizer: PreTrainedTokenizerBase | Path | str) -> tuple[PreTrainedTokenizerBase, str]:
    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer).expanduser()
        return load_tokenizer(path), str(path.resolve())
    return tokenizer, str(getattr(tokenizer, "name_or_path", "") or "")


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    # verbose=False: long documents exceed a tokenizer's model_max_length by design; that is not a problem here
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


@dataclass
class PackSummary:
    """What ``pack`` wrote: tokens and documents per split."""

    path: Path
    tokens: dict[str, int]
    documents: dict[str, int]
    vocab_size: int


def pack(
    data_dir: Path | str,
    tokenizer: PreTrainedTokenizerBase | Path | str,
    *,
    splits: Sequence[str] = SPLITS,
    batch_documents: int = 8,
    progress: bool = True,
) -> PackSummary:
    """Tokenize ``data_dir/corpus`` with ``tokenizer`` (an object or a directory) into ``data_dir/tokens``.

    The arrays are written to a temporary directory and swapped in at the end. A progress bar (bytes of text)
    goes to stderr when ``progress``.
    """
    data_dir = Path(data_dir).expanduser()
    if not (data_dir / CORPUS_DIR).is_dir():
        raise FileNotFoundError(f"{data_dir / CORPUS_DIR} does not exist; build the corpus first (tttlm data prepare)")
    tok, tok_path = _tokenizer_and_path(tokenizer)
    vocab_size = len(tok)
    eos = end_of_text_id(tok)
    dtype = token_dtype(vocab_size)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TOKENS_DIR}.", dir=data_dir))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "eos_token_id": eos,
        "tokenizer_fingerprint": tokenizer_fingerprint(tok),
        "tokenizer": tok_path,
        "splits": {},
    }
    summary = PackSummary(path=data_dir / TOKENS_DIR, tokens={}, documents={}, vocab_size=vocab_size)
    try:
        for split in splits:
            documents = list(iter_documents(data_dir, split))
            offsets = [0]
            bar = tqdm(
                total=sum(len(d.text.encode()) for d in documents),
                desc=f"tokenizing {split}",
                unit="B",
                unit_scale=True,
                disable=not progress,
                file=sys.stderr,
            )
            with open(tmp / f"{split}.bin", "wb") as handle, bar:
                for start in range(0, len(documents), batch_documents):
                    batch = documents[start : start + batch_documents]
                    for ids in _encode(tok, [d.text for d in batch]):
                        array = np.asarray([*ids, eos], dtype=np.int64)
                        if array.size and (array.min() < 0 or array.max() >= vocab_size):
                            raise ValueError(f"tokenizer produced id {int(array.max())} outside [0, {vocab_size})")
                        array.astype(dtype).tofile(handle)
                        offsets.append(offsets[-1] + array.size)
                    bar.update(sum(len(d.text.encode()) for d in batch))
            np.save(tmp / f"{split}.idx.npy", np.asarray(offsets, dtype=np.int64), allow_pickle=False)
            (tmp / f"{split}.ids.json").write_text(json.dumps([d.id for d in documents], ensure_ascii=False))
            meta["splits"][split] = {
                "tokens": offsets[-1],
                "documents": len(documents),
                "sha256": sha256_file(tmp / f"{split}.bin"),
                "idx_sha256": sha256_file(tmp / f"{split}.idx.npy"),
            }
            summary.tokens[split] = offsets[-1]
            summary.documents[split] = len(documents)
        write_json_atomic(tmp / META, meta)
        replace_dir(tmp, data_dir / TOKENS_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _tokens_dir(path: Path) -> Path:
    # accept the prepared data directory or its tokens/ directory
    return path if (path / META).exists() else path / TOKENS_DIR


def _repack_hint(tokens_dir: Path) -> str:
    return f"re-pack it: tttlm data prepare --out {tokens_dir.parent}"


def read_meta(data_dir: Path | str) -> dict[str, Any]:
    """``tokens/meta.json`` of a prepared data directory (or of the tokens directory itself)."""
    data_dir = Path(data_dir).expanduser()
    path = _tokens_dir(data_dir) / META
    if not path.exists():
        prepared = data_dir.parent if data_dir.name == TOKENS_DIR else data_dir
        missing = "does not exist" if not prepared.exists() else f"has no packed tokens ({path} is missing)"
        raise FileNotFoundError(
            f"data directory {prepared} {missing}; prepare it with: tttlm data prepare --out {prepared} "
            "(or point data.dir / --data at a prepared directory)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptDataError(f"{path} is not valid JSON ({error}; truncated?); {_repack_hint(path.parent)}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not format-{FORMAT} packed data; this tttlm reads format {FORMAT}: {_repack_hint(path.parent)}"
        )
    return meta


class PackedDataset:
    """One split of packed tokens, memory-mapped.

    Attributes:
        tokens: (num_tokens,) uint16/uint32 memmap, documents back to back, each followed by the end-of-text id.
        offsets: (documents + 1,) int64; document i is ``tokens[offsets[i]:offsets[i + 1]]``.
        vocab_size, eos_token_id, fingerprint: from the tokenizer the data was packed with.
    """

    def __init__(self, data_dir: Path | str, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        self.dir = _tokens_dir(Path(data_dir).expanduser())
        self.meta = read_meta(data_dir)
        if split not in self.meta["splits"]:
            raise ValueError(f"{self.dir} has no {split!r} split (has {', '.join(self.meta['splits'])}); re-pack it")
        info = self.meta["splits"][split]
        self.split = split
        self.vocab_size: int = self.meta["vocab_size"]
        self.eos_token_id: int = self.meta["eos_token_id"]
        self.fingerprint: str = self.meta["tokenizer_fingerprint"]
        dtype = np.dtype(self.meta["dtype"])
        path = self.bin_path
        expected = info["tokens"] * dtype.itemsize
        if not path.exists() or path.stat().st_size != expected:
            size = f"{path.stat().st_size} bytes" if path.exists() else "missing"
            raise CorruptDataError(
                f"{path} should hold {expected} bytes ({info['tokens']} tokens) but is {size}; {_repack_hint(self.dir)}"
            )
        # an empty split cannot be memory-mapped; keep an empty array instead
        self.tokens = np.memmap(path, dtype=dtype, mode="r") if expected else np.zeros(0, dtype=dtype)
        index = self.dir / f"{split}.idx.npy"
        try:
            self.offsets = np.load(index, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise CorruptDataError(f"{index} is unreadable ({error}; truncated?); {_repack_hint(self.dir)}") from None
        if self.offsets.shape != (info["documents"] + 1,) or int(self.offsets[-1]) != info["tokens"]:
            raise CorruptDataError(
                f"{index} does not describe {info['documents']} documents of {info['tokens']} tokens (shape "
                f"{self.offsets.shape}); {_repack_hint(self.dir)}"
            )

    @property
    def bin_path(self) -> Path:
        """The split's token file."""
        return self.dir / f"{self.split}.bin"

    def verify_checksum(self) -> None:
        """Raise ``CorruptDataError`` unless the token and offset files have the sha256s recorded in ``meta.json``
        (read in 1 MiB chunks: about a second per GB). Sizes are checked on opening; this finds files altered in
        place."""
        info = self.meta["splits"][self.split]
        for path, key in ((self.bin_path, "sha256"), (self.dir / f"{self.split}.idx.npy", "idx_sha256")):
            if key in info and sha256_file(path) != info[key]:
                raise CorruptDataError(
                    f"{path} does not match the sha256 recorded in {self.dir / META} (altered or corrupted in "
                    f"place); {_repack_hint(self.dir)}, or restore the original files"
                )

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_documents(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def long_documents(self, min_tokens: int) -> PackedDataset:
        """This split with only the documents of at least ``min_tokens`` tokens (end-of-text included), back to back
        in memory: the TTT-E2E release trains on DCLM documents of at least 8K tokens. The checksums stay those of
        the files (``verify_checksum`` first)."""
        lengths = np.diff(self.offsets)
        kept = np.flatnonzero(lengths >= min_tokens)
        subset = copy.copy(self)
        subset.tokens = (
            np.concatenate([self.document(int(i)) for i in kept]) if len(kept) else np.zeros(0, self.tokens.dtype)
        )
        subset.offsets = np.concatenate([[0], np.cumsum(lengths[kept])]).astype(np.int64)
        return subset

    def document(self, index: int) -> np.ndarray:
        """Token ids of document ``index`` (end-of-text id included), shape (length,)."""
        return np.asarray(self.tokens[self.offsets[index] : self.offsets[index + 1]])

    def document_ids(self) -> list[str]:
        """The ids of the documents, in order."""
        return json.loads((self.dir / f"{self.split}.ids.json").read_text())

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase, override: str = "") -> None:
        """Raise ``DataMismatchError`` unless ``tokenizer`` is the one the data was packed with; ``override`` names
        a way to go ahead anyway, added to the message."""
        fingerprint = tokenizer_fingerprint(tokenizer)
        if fingerprint != self.fingerprint:
            raise DataMismatchError(
                f"the tokens in {self.dir} were made with another tokenizer (fingerprint {self.fingerprint[:12]}, "
                f"vocab {self.vocab_size}, from {self.meta.get('tokenizer') or 'unknown'}) than "
                f"{getattr(tokenizer, 'name_or_path', '') or 'the given one'} (fingerprint {fingerprint[:12]}, vocab "
                f"{len(tokenizer)}). Use the tokenizer saved with the data, or re-pack the data with this one: "
                f"tttlm data prepare --tokenizer DIR{override}"
            )

    def check_vocab(self, model_vocab_size: int) -> None:
        """Raise ``DataMismatchError`` if a model with ``model_vocab_size`` embeddings cannot read these ids."""
        if model_vocab_size < self.vocab_size:
            raise DataMismatchError(
                f"the model has vocab_size {model_vocab_size} but the data in {self.dir} uses ids up to "
                f"{self.vocab_size - 1} (tokenizer vocab {self.vocab_size}); set the model's vocab_size to "
                f"{self.vocab_size} (the trainer does this when model.overrides has no vocab_size)"
            )
