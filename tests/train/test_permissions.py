"""Output files follow the umask: a prepared data directory, checkpoints and the final model come out as a plain
``open``/``mkdir`` would make them (0644/0755 under umask 022), not with the private 0600/0700 of ``tempfile`` or
safetensors; under umask 077 they stay private.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from train_testing import make_data_dir, tiny_config

from tttlm.data.io import current_umask
from tttlm.train.loop import train

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")


@pytest.fixture
def umask(request: pytest.FixtureRequest):
    """Run the test under the umask given as the parameter, and put the old one back afterwards."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    """{path relative to ``root``: permission bits} of everything under ``root``."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True, ids=["022", "077"])
def test_outputs_follow_the_umask(tmp_path, umask: int) -> None:
    assert current_umask() == umask  # reading it leaves it as it was
    data = make_data_dir(tmp_path / "data")
    train(tiny_config(tmp_path / "run", data, **{"train.steps": 2, "checkpoint.every": 2}))
    modes = _modes(tmp_path)
    for name in ("manifest.json", "corpus", "corpus/train.jsonl", "tokens", "tokens/meta.json", "tokenizer"):
        assert f"data/{name}" in modes
    assert {"run/checkpoints/step-00000002/model.safetensors", "run/model/model.safetensors"} <= modes.keys()
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (dir_mode if (tmp_path / name).is_dir() else file_mode)
    }
    assert wrong == {}, f"expected files {oct(file_mode)} and directories {oct(dir_mode)}"
