"""``tttlm convert`` on TTT-E2E release checkpoints (orbax, as the release's trainer writes them): the weights read
are the fixture's parameters, the converted directory loads with ``AutoModelForCausalLM`` and gives the release's
per-token NLL with test-time training on; bad inputs get clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts  # with tttlm[test] (the orbax extra): these tests run, never skip, in CI
import torch
import torch.nn.functional as F
from e2e_release_testing import FIXTURES, Fixture
from safetensors.numpy import load_file as load_numpy
from transformers import AutoModelForCausalLM

import tttlm.models.e2e.orbax as orbax_module
from tttlm.cli import main
from tttlm.models.convert import convert_checkpoint, detect_format
from tttlm.models.e2e.orbax import read_model_weights
from tttlm.models.e2e.release import ReleaseFormatError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "ttt-e2e-official-tiny"
ORBAX, CONFIG = FIXTURE / "orbax", FIXTURE / "config.json"


def test_the_weights_read_from_orbax_are_the_fixture_parameters() -> None:
    arrays, where = read_model_weights(ORBAX)
    assert where == ORBAX / "4800" / "model_weights"  # the run's last step
    params = load_numpy(FIXTURE / "params.safetensors")
    assert set(arrays) == set(params)
    for name, value in params.items():
        assert np.array_equal(arrays[name], value), name


# every release fixture that has an orbax checkpoint
RELEASE_FIXTURES = [f for f in FIXTURES if (f / "orbax").is_dir()]


@pytest.mark.parametrize("fixture", RELEASE_FIXTURES, ids=[f.name for f in RELEASE_FIXTURES])
def test_convert_cli_writes_a_model_that_gives_the_release_nll(tmp_path: Path, fixture: Path) -> None:
    out = tmp_path / "converted"
    steps = sorted((p for p in (fixture / "orbax").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert detect_format(fixture / "orbax") == "release"
    assert main(["convert", str(steps[-1]), str(out), "--config", str(fixture / "config.json")]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    release = Fixture.load(fixture)
    model.set_inner_lr_scale(release.warmup_multiplier)  # computed at an outer step of the inner-lr warm-up
    with torch.no_grad():
        logits = model(input_ids=release.ids).logits[0, :-1]
    nll = F.cross_entropy(logits, release.expected["target_tokens"], reduction="none")
    reference = release.expected["meta_token_nll"]
    assert float((nll - reference).abs().max() / reference.abs().max()) <= 1e-5


def test_bfloat16_checkpoints_convert_to_the_dtype_asked(tmp_path: Path) -> None:
    # a checkpoint stored in bf16 (the release's default CheckpointConfig.float_dtype), written the way orbax does
    weights = tmp_path / "run" / "100" / "model_weights"
    base = {"driver": "ocdbt", "base": f"file://{weights}/"}
    params = load_numpy(FIXTURE / "params.safetensors")
    for name, value in params.items():
        spec = {"driver": "zarr", "kvstore": {**base, "path": f"{name}/"}}
        store = ts.open(spec, create=True, dtype=ts.bfloat16, shape=value.shape).result()
        store.write(value.astype(ts.bfloat16.numpy_dtype)).result()
    model = convert_checkpoint(tmp_path / "run", config=CONFIG, dtype="float64")
    embedding = model.model.embed_tokens.weight
    assert embedding.dtype == torch.float64
    rounded = torch.from_numpy(params["language_model.model.wte.weight"]).bfloat16().double()
    assert torch.equal(embedding, rounded)


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ([], "--config"),  # a release checkpoint without its configuration
        (["--config", str(CONFIG), "--preset", "125m"], "not both"),
        (["--preset", "125m"], "does the config match the checkpoint"),  # a released size of another shape
    ],
)
def test_convert_errors_say_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], needle: str
) -> None:
    assert main(["convert", str(ORBAX), str(tmp_path / "out"), *arguments]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_config_without_a_model_section_and_a_directory_without_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("training:\n  seq_length: 96\n")
    with pytest.raises(ValueError, match="no `model` section"):
        convert_checkpoint(ORBAX, config=bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="neither a ttt-lm-pytorch checkpoint"):
        convert_checkpoint(empty)
    not_e2e = tmp_path / "fa.json"
    model = {**json.loads(CONFIG.read_text())["model"], "prime": False, "suffix_len": 0}
    not_e2e.write_text(json.dumps({"model": model}))
    with pytest.raises(ReleaseFormatError, match="SWA baseline, not TTT-E2E"):
        convert_checkpoint(ORBAX, config=not_e2e)


def test_only_model_weights_is_read(tmp_path: Path) -> None:
    # the optimiser state is never opened: a run whose opt_state is unreadable still converts
    run = tmp_path / "run"
    shutil.copytree(ORBAX, run)
    for path in (run / "4800" / "opt_state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    assert sum(p.numel() for p in convert_checkpoint(run, config=CONFIG).parameters()) > 0


def test_without_tensorstore_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "tensorstore", None)
    with pytest.raises(ImportError, match=r"tttlm\[orbax\]"):
        orbax_module.read_model_weights(ORBAX)
