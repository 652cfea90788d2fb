"""Documents, and reading the user's own data: text files, JSONL, parquet, or a Hugging Face ``datasets`` directory.

A document is the unit of the train/val/test split: a whole play, novel or book keeps its identity, so long-context
evaluation sees real long inputs and no document is split across training and evaluation.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
# split names other tools use, mapped to ours
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    Attributes:
        id: unique, stable identifier ("source/name"); the split is derived from it.
        text: the document's text (newlines normalised to ``\\n``).
        source: which source it came from ("shakespeare", "austen", "user:notes", ...).
        title: human-readable title, may be empty.
        split: a split fixed by the data itself ("train", "val" or "test"), or None to derive it from ``group``.
        group: documents sharing a group always share a split (editions or anthologies of the same text);
            empty means the document's own ``id``.
    """

    id: str
    text: str
    source: str
    title: str = ""
    split: str | None = None
    group: str = ""

    @property
    def split_key(self) -> str:
        """What the split is derived from: the group, or the id when there is none."""
        return self.group or self.id


def normalize_text(text: str) -> str:
    """Unify newlines, drop a byte-order mark and trailing whitespace: the same text always gives the same bytes."""
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff").rstrip() + "\n"


def normalize_split(value: object, where: str) -> str | None:
    """Map a split label from user data ("validation", "dev", ...) to ours; None when absent."""
    if value is None or value == "":
        return None
    key = str(value).lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"{where}: unknown split {value!r}; use one of train, val (validation, dev) or test")
    return _SPLIT_ALIASES[key]


def _is_datasets_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _text_of(record: dict, field: str, where: str) -> str:
    if field not in record:
        raise ValueError(
            f"{where}: no {field!r} field (fields: {', '.join(sorted(record)) or 'none'}); "
            f"pass --text-field NAME to use another one"
        )
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _decode(data: bytes, where: str) -> str:
    """``data`` as UTF-8; ``ValueError`` naming ``where`` and the first bad byte otherwise (never U+FFFD
    replacements: a binary file or another encoding would be trained on as garbage)."""
    if b"\0" in data:
        raise ValueError(f"{where}: holds NUL bytes, so it is binary, not text; remove it from the input")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{where}: not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}); convert it to UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8) or remove it from the input"
        ) from None


def _read_jsonl(path: Path, source: str, field: str, prefix: str) -> Iterator[Document]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:  # bytes, so that a bad line is reported with its number
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            line = _decode(raw, where)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg}); JSONL needs one object per line") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
            doc_id = str(record.get("id", number))
            yield Document(
                id=f"{prefix}/{doc_id}",
                text=normalize_text(_text_of(record, field, where)),
                source=source,
                title=str(record.get("title", "")),
                split=normalize_split(record.get("split"), where),
                group=f"{prefix}/{record['group']}" if record.get("group") else "",
            )


def _rows_to_documents(
    rows: Iterator[dict], source: str, field: str, where: str, split: str | None, prefix: str
) -> Iterator[Document]:
    for number, row in enumerate(rows):
        doc_id = str(row["id"]) if row.get("id") is not None else str(number)
        yield Document(
            id=f"{prefix}/{doc_id}",
            text=normalize_text(_text_of(row, field, f"{where} row {number}")),
            source=source,
            title=str(row.get("title") or ""),
            split=split or normalize_split(row.get("split"), f"{where} row {number}"),
            group=f"{prefix}/{row['group']}" if row.get("group") else "",
        )


def _read_parquet(path: Path, source: str, field: str, prefix: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading {path} needs pyarrow; install it with: pip install 'tttlm[data]' (or pip install pyarrow)"
        ) from None
    table = pq.read_table(path)
    yield from _rows_to_documents(iter(table.to_pylist()), source, field, str(path), None, prefix)


def _read_datasets_dir(path: Path, source: str, field: str) -> Iterator[Document]:
    try:
        import datasets  # heavy: imported only when the user passes a datasets directory
    except ImportError:
        raise ImportError(
            f"{path} looks like a Hugging Face datasets directory; reading it needs the datasets package: "
            "pip install 'tttlm[data]' (or pip install datasets)"
        ) from None
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        for name, dataset in loaded.items():
            split = normalize_split(name, f"{path} split {name!r}")
            yield from _rows_to_documents(iter(dataset), source, field, f"{path}[{name}]", split, f"{source}/{name}")
    else:
        yield from _rows_to_documents(iter(loaded), source, field, str(path), None, source)


def read_path(path: Path | str, *, text_field: str = "text", source: str | None = None) -> Iterator[Document]:
    """Documents from one user path: a file, a directory of files, or a ``datasets`` directory.

    Text files (.txt, .text, .md, .rst) are one document each; JSONL (.jsonl, .jsonl.gz, .ndjson) and parquet hold
    one document per row, with the text in ``text_field`` and optional "id", "title", "split" and "group" fields; a
    directory saved by ``datasets`` (``save_to_disk``) is read with ``datasets.load_from_disk`` (split names kept).
    Other directories are searched recursively, in sorted order, for the file types above.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist; pass a text/JSONL/parquet file or a directory")
    source = source or f"user:{path.stem if path.is_file() else path.name}"
    if path.is_dir() and _is_datasets_dir(path):
        yield from _read_datasets_dir(path, source, text_field)
        return
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    base = path.parent if path.is_file() else path
    found = False
    for file in files:
        name = file.name.lower()
        relative = file.relative_to(base).as_posix()
        if name.endswith(TEXT_SUFFIXES):
            found = True
            text = _decode(file.read_bytes(), str(file))
            yield Document(id=f"{source}/{relative}", text=normalize_text(text), source=source, title=file.stem)
        elif name.endswith(JSONL_SUFFIXES):
            found = True
            yield from _read_jsonl(file, source, text_field, f"{source}/{relative}")
        elif name.endswith(PARQUET_SUFFIXES):
            found = True
            yield from _read_parquet(file, source, text_field, f"{source}/{relative}")
        elif path.is_file():
            raise ValueError(
                f"input {file}: unknown file type; use text ({', '.join(TEXT_SUFFIXES)}), JSONL "
                f"({', '.join(JSONL_SUFFIXES)}) or parquet, or a directory of them"
            )
    if not found:
        raise ValueError(f"input {path} holds no text, JSONL or parquet files")
