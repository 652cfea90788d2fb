"""Helpers of the bad-input suite: run the CLI in-process and check its one-line error; fingerprint directories to
show that a refused command lost nothing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tttlm.cli import main


def run_cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    """(exit status, stderr) of ``tttlm *argv`` run in this process; argparse's exits count as statuses."""
    capsys.readouterr()  # drop what came before
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def assert_refused(capsys: pytest.CaptureFixture, argv: list[object], code: int, *words: str) -> str:
    """Run ``tttlm *argv``; assert exit status ``code``, no traceback, and one error line naming every one of
    ``words``. Returns that line."""
    status, err = run_cli(capsys, *argv)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert status == code, err
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], f"{word!r} not in: {errors[0]}"
    return errors[0]


def fingerprint(*roots: Path) -> dict[str, str]:
    """{path: sha256} of every file below ``roots`` (what must come out of a refused command unchanged)."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def copy_run(run: Path, to: Path) -> Path:
    """A copy of a run directory to break."""
    shutil.copytree(run, to)
    return to


def flip_byte(path: Path, offset: int = -100) -> None:
    """Change one byte of ``path`` in place (the size stays)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut ``path`` to the first ``keep`` of its bytes (a write that did not finish)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
