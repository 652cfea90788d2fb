"""The one rule for what a corpus is built from: nothing named means the default corpus, and a failed fetch says
which source, which command and what to do (never "every document is empty"). Offline: the sources are stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_testing import synthetic_documents

from tttlm.cli import main
from tttlm.data import fetch
from tttlm.data.corpus import MANIFEST, prepare_corpus
from tttlm.data.prepare import ensure_prepared, is_prepared, prepare_data
from tttlm.data.sources import DEFAULT_SOURCES, SOURCES, Source


@pytest.fixture
def offline_sources(tmp_path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every default source replaced by one that yields a few synthetic documents; returns the names fetched."""
    fetched: list[str] = []
    for index, name in enumerate(DEFAULT_SOURCES):

        def fetch_one(name: str = name) -> Path:
            fetched.append(name)
            package = tmp_path / f"{name}.pkg"
            package.write_bytes(name.encode())
            return package

        def read(path: Path, index: int = index, name: str = name) -> list:
            docs = synthetic_documents(8, seed=index, words=120)
            return [type(d)(f"{name}/{d.id}", d.text, name) for d in docs]

        monkeypatch.setitem(SOURCES, name, Source(name, f"stand-in for {name}", fetch_one, read))
    return fetched


def test_prepare_data_with_nothing_named_builds_the_default_corpus(tmp_path, offline_sources) -> None:
    summary = prepare_data(tmp_path / "data", vocab_size=300, progress=False)
    assert offline_sources == list(DEFAULT_SOURCES)
    manifest = json.loads((tmp_path / "data" / MANIFEST).read_text())
    assert [s["name"] for s in manifest["sources"]] == list(DEFAULT_SOURCES)
    assert set(summary.corpus.by_source) == set(DEFAULT_SOURCES)
    assert is_prepared(tmp_path / "data")


def test_prepare_corpus_with_nothing_named_refuses_clearly(tmp_path) -> None:
    with pytest.raises(ValueError, match="no documents to build a corpus from"):
        prepare_corpus(tmp_path)


def test_ensure_prepared_redoes_an_interrupted_preparation(tmp_path, offline_sources) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / MANIFEST).write_text("{}")  # an earlier run stopped after the corpus, before the tokens
    lines: list[str] = []
    assert ensure_prepared(data, say=lines.append) == data
    assert is_prepared(data)
    assert lines == [f"preparing the default corpus and tokenizer in {data} (downloads once, then cached)"]
    offline_sources.clear()
    ensure_prepared(data, say=lines.append)
    assert offline_sources == []  # complete: nothing fetched again
    assert lines[-1] == f"using the prepared data in {data}"


def test_demo_reports_a_failed_fetch_with_the_source_and_the_command(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing_program() -> Path:
        return fetch.apt_deb("bible-kjv-text", tmp_path)

    monkeypatch.setattr(fetch, "run_command", _fail_as_if_offline)
    name = DEFAULT_SOURCES[-1]
    monkeypatch.setitem(SOURCES, name, Source(name, "Debian package bible-kjv-text", missing_program, list))
    monkeypatch.setattr("tttlm.data.sources.DEFAULT_SOURCES", (name,))
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--data", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert f"corpus source {name!r}" in err
    assert "`apt-get download bible-kjv-text`" in err
    assert "tttlm data prepare --input PATH" in err  # what to do instead
    assert "every document is empty" not in err


def _fail_as_if_offline(command, cwd, what):
    raise fetch.FetchError(
        f"could not fetch {what}: `{' '.join(command)}` (run in {cwd}) failed with exit code 100:\n"
        "E: Failed to fetch ... Temporary failure resolving\n" + fetch.PROVIDE_YOUR_OWN.format(where=cwd)
    )
