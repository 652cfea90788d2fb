"""Bad inputs to ``tttlm eval`` and ``tttlm generate``: missing or broken checkpoints, another arch's config, data of
another tokenizer, non-finite weights, bad numbers, unwritable output; each refused with its exit status and one
line naming the problem, and nothing written or changed."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from bad_testing import assert_refused, copy_run, fingerprint, run_cli, truncate
from safetensors.torch import load_file, save_file

from tttlm.models import build
from tttlm.train.checkpoint import EXPORT_MANIFEST

FAST = ["--contexts", "64", "--max-docs", "2", "--chunk", "64", "--device", "cpu"]


def _ppl(ckpt, *extra) -> list[object]:
    return ["eval", "ppl", "--ckpt", ckpt, *FAST, *extra]


@pytest.fixture
def run(tmp_path, finished_run):
    return copy_run(finished_run, tmp_path / "run")


def test_a_good_run_evaluates(capsys, run) -> None:
    # the baseline the cases below break
    code, err = run_cli(capsys, *_ppl(run))
    assert code == 0, err
    assert json.loads((run / "eval" / "ppl.json").read_text())["results"][0]["ppl"] > 0


def test_missing_checkpoint(capsys, tmp_path) -> None:
    assert_refused(capsys, _ppl(tmp_path / "gone"), 2, "gone", "does not exist")


def test_run_without_a_model(capsys, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    assert_refused(capsys, _ppl(tmp_path / "empty"), 2, "neither a run directory", "is training finished?")


def test_data_of_another_tokenizer_is_refused(capsys, run, other_tokenizer_data) -> None:
    line = assert_refused(
        capsys, _ppl(run, "--data", other_tokenizer_data), 2, "another tokenizer", "--allow-other-tokenizer"
    )
    assert "vocab 300" in line  # the same vocabulary size: only the tokenizer's identity tells them apart
    assert not (run / "eval").exists()


def test_data_of_another_tokenizer_with_the_flag(capsys, run, other_tokenizer_data) -> None:
    code, err = run_cli(capsys, *_ppl(run, "--data", other_tokenizer_data, "--allow-other-tokenizer"))
    assert code == 0, err
    assert (run / "eval" / "ppl.json").exists()


def test_missing_data_dir(capsys, run, tmp_path) -> None:
    line = assert_refused(capsys, _ppl(run, "--data", tmp_path / "nope"), 2, "does not exist", "tttlm data prepare")
    assert "tokens/tokens" not in line


def test_truncated_weights_of_a_run(capsys, run) -> None:
    truncate(run / "model" / "model.safetensors")
    before = fingerprint(run)
    assert_refused(capsys, _ppl(run), 2, "model.safetensors", "truncated", "--resume re-exports")
    assert fingerprint(run) == before


def test_truncated_weights_of_a_bare_model(capsys, run) -> None:
    model = run / "model"
    (model / EXPORT_MANIFEST).unlink()  # a save_pretrained directory: nothing to verify against
    truncate(model / "model.safetensors")
    assert_refused(capsys, _ppl(model), 2, "cannot load the model")


def test_truncated_config_json(capsys, run) -> None:
    (run / "model" / EXPORT_MANIFEST).unlink()
    truncate(run / "model" / "config.json")
    assert_refused(capsys, _ppl(run), 2, "config.json", "not a valid JSON")


def test_another_archs_config_json(capsys, run, tmp_path) -> None:
    other = build("transformer", "tiny", vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    other.save_pretrained(tmp_path / "llama")
    model = run / "model"
    (model / EXPORT_MANIFEST).unlink()
    shutil.copy(tmp_path / "llama" / "config.json", model / "config.json")
    assert_refused(capsys, _ppl(run), 2, "LlamaForCausalLM", "another model's", "config.json")


def _nan_model(run) -> None:
    """Weights that give a NaN loss (finite but absurd ones may too; NaN makes it certain)."""
    model = run / "model"
    (model / EXPORT_MANIFEST).unlink()
    weights = load_file(model / "model.safetensors")
    weights = {k: v * float("nan") if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})


def test_ppl_of_non_finite_weights(capsys, run) -> None:
    _nan_model(run)
    assert_refused(capsys, _ppl(run), 1, "non-finite loss", "earlier checkpoint")
    assert not (run / "eval").exists()  # no ppl.json with NaN in it


def test_by_position_of_non_finite_weights(capsys, run) -> None:
    _nan_model(run)
    argv = ["eval", "by-position", "--ckpt", run, "--length", "32", "--max-docs", "1", "--device", "cpu"]
    assert_refused(capsys, argv, 1, "non-finite loss")
    assert not (run / "eval").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("command", ["ppl", "generate"])
def test_cuda_device_without_a_gpu(capsys, run, command) -> None:
    argv = _ppl(run) if command == "ppl" else ["generate", "--ckpt", run, "--prompt", "the"]
    assert_refused(capsys, [*argv, "--device", "cuda"], 2, "--device cuda", "CUDA is not available")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories; see the test below")
def test_read_only_output_dir(capsys, run, tmp_path) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert_refused(capsys, _ppl(run, "--out", out), 2, "ppl.json", "Permission denied", "--out")
    finally:
        out.chmod(0o700)


def test_output_dir_blocked_by_a_file(capsys, run, tmp_path) -> None:
    # the fault that holds as root too (root bypasses permissions): --out below a regular file
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    assert_refused(capsys, _ppl(run, "--out", blocker / "eval"), 2, "blocker")
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-new-tokens", "-5"),
        ("--max-new-tokens", "0"),
        ("--max-new-tokens", "ten"),
        ("--temperature", "-1"),
        ("--temperature", "nan"),
        ("--top-p", "1.5"),
        ("--top-p", "0"),
        ("--top-k", "-3"),
        ("--chunk", "0"),
        ("--threads", "-1"),
    ],
)
def test_generate_refuses_bad_numbers(capsys, run, option, value) -> None:
    argv = ["generate", "--ckpt", run, "--prompt", "the", option, value]
    assert_refused(capsys, argv, 2, f"argument {option}", repr(value))


@pytest.mark.parametrize(("option", "value"), [("--max-docs", "-1"), ("--chunk", "-64"), ("--contexts", "0")])
def test_eval_refuses_bad_numbers(capsys, run, option, value) -> None:
    assert_refused(capsys, ["eval", "ppl", "--ckpt", run, option, value], 2, f"argument {option}")


def test_generate_with_an_empty_prompt(capsys, run) -> None:
    assert_refused(capsys, ["generate", "--ckpt", run, "--prompt", "", "--device", "cpu"], 2, "prompt is empty")


def test_generate_from_a_missing_checkpoint(capsys, tmp_path) -> None:
    assert_refused(capsys, ["generate", "--ckpt", tmp_path / "gone", "--prompt", "the"], 2, "does not exist")


def test_a_model_without_a_tokenizer_says_what_is_checked(capsys, run, data_dir) -> None:
    model = run / "model"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    (model / EXPORT_MANIFEST).unlink()
    code, err = run_cli(capsys, *_ppl(run))
    assert code == 0, err
    assert "only the vocabulary size is checked" in err
