"""Jane Austen's six novels, from the Debian package ``r-cran-janeaustenr``.

The package is an R data package: each novel is a character vector (one element per line of text) stored in the
R lazy-load database ``janeaustenr/data/Rdata.rdx`` + ``Rdata.rdb`` (``R/sysdata.rdx`` is read too when present).
We read the ``.deb`` and the database in Python (``tttlm.data.rdata``); no R is needed.
"""

from __future__ import annotations

from pathlib import Path

from tttlm.data.documents import Document, normalize_text
from tttlm.data.fetch import FetchError, apt_deb, deb_files, downloads_dir
from tttlm.data.rdata import RFormatError, RVector, read_lazyload

PACKAGE = "r-cran-janeaustenr"
TITLES = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}


def fetch() -> Path:
    """The ``.deb`` in the cache, downloaded with ``apt-get download`` the first time."""
    return apt_deb(PACKAGE, downloads_dir("austen"))


def _is_database(name: str) -> bool:
    return "/janeaustenr/" in name and name.endswith((".rdx", ".rdb")) and ("/data/" in name or "/R/sysdata." in name)


def read_austen(deb: Path) -> list[Document]:
    """Every character vector in the package's data (the six novels), one document each, lines joined by newlines."""
    files = deb_files(deb, _is_database)
    documents: list[Document] = []
    for index_name in sorted(name for name in files if name.endswith(".rdx")):
        db_name = index_name[: -len(".rdx")] + ".rdb"
        if db_name not in files:
            raise FetchError(f"{deb}: {index_name} has no {db_name} beside it")
        try:
            variables = read_lazyload(files[index_name], files[db_name], skip_unsupported=True, where=index_name)
        except RFormatError as error:
            raise FetchError(f"{deb}: cannot read the R data in {index_name}: {error}") from None
        for name, value in sorted(variables.items()):
            if isinstance(value, RVector) and value.kind == "character":
                text = "\n".join(line or "" for line in value.values)
                documents.append(
                    Document(
                        id=f"austen/{name}", text=normalize_text(text), source="austen", title=TITLES.get(name, name)
                    )
                )
    if not documents:
        raise FetchError(f"{deb} holds no texts in janeaustenr/data/Rdata.rdx; is it the {PACKAGE} package?")
    return documents
