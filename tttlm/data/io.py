"""Small file helpers shared by the data pipeline and the trainer: checksums and atomic writes.

Atomic writes go through ``tempfile``, which creates files 0600 and directories 0700 whatever the umask; the rename
would carry that private mode to the final name, so ``apply_umask`` gives the temporary the mode a plain ``open`` or
``mkdir`` would have (0o666 or 0o777 less the umask) before it is renamed: a data or run directory on a shared
filesystem stays readable by the other users and nodes that the umask lets in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process's file mode creation mask.

    POSIX has no call that only reads it: ``os.umask`` sets a new mask and returns the old one, so the mask is set to
    the most private value (0o077) for the instant before the old one is put back; a file that another thread creates
    in that instant comes out more private than intended, never more open.
    """
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def apply_umask(path: Path | str) -> None:
    """Give ``path`` the mode that ``open`` (files: 0o666) or ``mkdir`` (directories: 0o777) would, less the umask."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~current_umask())


def apply_umask_below(directory: Path | str) -> None:
    """``apply_umask`` to every file directly in ``directory`` (e.g. after ``save_pretrained``: safetensors >= 0.8
    writes its files 0600 whatever the umask)."""
    for path in Path(directory).iterdir():
        if path.is_file():
            apply_umask(path)


def fsync_dir(path: Path | str) -> None:
    """Flush a directory entry (a rename inside it) to disk where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path`` (with the
    mode of a file written in place: 0o666 less the umask): a reader finds the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path | str, payload: Any) -> None:
    """``payload`` as indented JSON, written by ``write_text_atomic``."""
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing an older ``final`` (old one removed after).

    ``tmp`` (typically from ``tempfile.mkdtemp``, mode 0700) first gets the mode ``mkdir`` would give it: 0o777 less
    the umask.
    """
    apply_umask(tmp)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
