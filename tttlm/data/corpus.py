"""Building a corpus directory: documents from the default sources and/or the user's files, split by document.

Layout of a prepared data directory (``tttlm data prepare --out DIR``)::

    DIR/manifest.json            sources, and per document: source, id, title, group, bytes, sha256, split
    DIR/corpus/{train,val,test}.jsonl   one document per line: {"id", "source", "title", "group", "text"}
    DIR/tokenizer/               the tokenizer (transformers format), see ``tttlm.data.tokenizer``
    DIR/tokens/                  the packed token arrays, see ``tttlm.data.packing``
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tttlm
from tttlm.data.documents import SPLITS, Document, read_path
from tttlm.data.fetch import FetchError
from tttlm.data.io import replace_dir, sha256_file, write_json_atomic
from tttlm.data.split import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, SALT, assign_splits

CORPUS_DIR = "corpus"
MANIFEST = "manifest.json"


@dataclass
class CorpusSummary:
    """What ``prepare_corpus`` wrote: documents and bytes per split and per source, and what it left out."""

    path: Path
    documents: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped_empty: list[str] = field(default_factory=list)
    dropped_duplicates: list[tuple[str, str]] = field(default_factory=list)


def _collect_default(names: Sequence[str]) -> tuple[list[Document], list[dict[str, Any]]]:
    from tttlm.data.sources import SOURCES

    unknown = [name for name in names if name not in SOURCES]
    if unknown:
        raise ValueError(f"unknown corpus source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    documents: list[Document] = []
    infos: list[dict[str, Any]] = []
    for name in names:
        source = SOURCES[name]
        try:
            path = source.fetch()
            docs = source.read(path)
        except FetchError as error:
            raise FetchError(f"corpus source {name!r} ({source.origin}): {error}") from None
        documents += docs
        infos.append(
            {
                "name": name,
                "origin": source.origin,
                "file": path.name,
                "sha256": sha256_file(path),
                "documents": len(docs),
            }
        )
    return documents, infos


def collect_documents(
    sources: Sequence[str] = (), inputs: Sequence[Path | str] = (), *, text_field: str = "text"
) -> tuple[list[Document], list[dict[str, Any]]]:
    """Documents of the named default sources (fetched into the cache if needed) and of the user's inputs.

    Returns the documents and one description per source/input for the manifest.
    """
    documents, infos = _collect_default(sources)
    for path in inputs:
        docs = list(read_path(path, text_field=text_field))
        documents += docs
        infos.append(
            {"name": f"input:{path}", "origin": str(Path(path).expanduser().resolve()), "documents": len(docs)}
        )
    if not documents:
        raise ValueError("no documents: pass --sources (the default corpus) and/or --input PATH")
    return documents, infos


def _clean(documents: Iterable[Document], summary: CorpusSummary) -> list[Document]:
    kept: list[Document] = []
    seen_ids: set[str] = set()
    seen_texts: dict[str, str] = {}
    for doc in documents:
        if doc.id in seen_ids:
            raise ValueError(
                f"document id {doc.id!r} appears twice; ids must be unique (give JSONL/parquet rows an 'id' field)"
            )
        seen_ids.add(doc.id)
        if not doc.text.strip():
            summary.dropped_empty.append(doc.id)
            continue
        digest = hashlib.sha256(doc.text.encode()).hexdigest()
        if digest in seen_texts:  # identical copies would put the same text in two splits
            summary.dropped_duplicates.append((doc.id, seen_texts[digest]))
            continue
        seen_texts[digest] = doc.id
        kept.append(doc)
    return kept


def prepare_corpus(
    out_dir: Path | str,
    *,
    sources: Sequence[str] = (),
    inputs: Sequence[Path | str] = (),
    documents: Sequence[Document] | None = None,
    text_field: str = "text",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> CorpusSummary:
    """Write ``out_dir/corpus/{train,val,test}.jsonl`` and ``out_dir/manifest.json``.

    Documents come from ``sources`` (names of the default corpus: shakespeare, milton, austen, bible), ``inputs``
    (the user's files, see ``tttlm.data.documents.read_path``) and ``documents`` (already made, e.g. in tests).
    Empty documents and exact duplicates are dropped (and listed in the manifest). The corpus directory is written
    beside the old one and swapped in at the end, so an interrupted run leaves the previous corpus intact.
    """
    out_dir = Path(out_dir).expanduser()
    summary = CorpusSummary(path=out_dir)
    if not sources and not inputs and documents is None:
        raise ValueError(
            "no documents to build a corpus from: name default-corpus sources, input files or documents "
            "(prepare_data with none of them builds the default corpus)"
        )
    collected, infos = collect_documents(sources, inputs, text_field=text_field) if sources or inputs else ([], [])
    if documents is not None:
        collected = [*collected, *documents]
        infos.append({"name": "python", "origin": "documents passed to prepare_corpus", "documents": len(documents)})
    kept = _clean(collected, summary)
    if not kept:
        raise ValueError("every document is empty; nothing to write")
    splits = assign_splits(kept, val_fraction, test_fraction)

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CORPUS_DIR}.", dir=out_dir))
    records = []
    try:
        with contextlib.ExitStack() as stack:
            handles = {s: stack.enter_context(open(tmp / f"{s}.jsonl", "w", encoding="utf-8")) for s in SPLITS}
            for doc, split in zip(kept, splits, strict=True):
                line = {"id": doc.id, "source": doc.source, "title": doc.title, "group": doc.group, "text": doc.text}
                handles[split].write(json.dumps(line, ensure_ascii=False) + "\n")
                data = doc.text.encode()
                records.append(
                    {
                        "source": doc.source,
                        "document": doc.id,
                        "title": doc.title,
                        "group": doc.group,
                        "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "split": split,
                    }
                )
                summary.documents[split] = summary.documents.get(split, 0) + 1
                summary.bytes[split] = summary.bytes.get(split, 0) + len(data)
                per_source = summary.by_source.setdefault(doc.source, dict.fromkeys(SPLITS, 0))
                per_source[split] += 1
        replace_dir(tmp, out_dir / CORPUS_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = {
        "format": 1,
        "tttlm_version": tttlm.__version__,
        "split": {
            "val": val_fraction,
            "test": test_fraction,
            "salt": SALT,
            "rule": "sha256(salt, group or id) in [0, val) -> val, [val, val + test) -> test, else train",
        },
        "sources": infos,
        "totals": {s: {"documents": summary.documents.get(s, 0), "bytes": summary.bytes.get(s, 0)} for s in SPLITS},
        "dropped": {
            "empty": summary.dropped_empty,
            "duplicates": [{"document": a, "same_text_as": b} for a, b in summary.dropped_duplicates],
        },
        "documents": records,
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    return summary


def iter_documents(data_dir: Path | str, split: str) -> Iterator[Document]:
    """The documents of one split of a prepared data directory, in file order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    path = Path(data_dir).expanduser() / CORPUS_DIR / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; build the corpus first with: tttlm data prepare --out {data_dir}"
        )
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            yield Document(
                id=record["id"],
                text=record["text"],
                source=record["source"],
                title=record.get("title", ""),
                split=split,
                group=record.get("group", ""),
            )
