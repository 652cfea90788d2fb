"""Bad configs and bad data given to ``tttlm train`` and ``tttlm data prepare``: each is refused with its exit status
and one line naming the problem and the fix, before anything is written or changed."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from bad_testing import assert_refused, copy_run, fingerprint, flip_byte, run_cli, truncate

from tttlm.train.checkpoint import list_checkpoints


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("optim.lr=.inf", ["optim.lr", "finite"]),
        ("optim.lr=.nan", ["optim.lr", "finite"]),
        ("optim.lr=-1", ["optim.lr", "> 0"]),
        ("optim.grad_clip=.inf", ["optim.grad_clip", "finite"]),
        ("data.seq_len=1", ["data.seq_len", ">= 2", "got 1"]),
        ("data.seq_len=0", ["data.seq_len", ">= 2", "got 0"]),
        ("train.on_nonfinite=ignore", ["train.on_nonfinite", "stop, skip"]),
        ("train.stpes=3", ["train.stpes", "valid keys"]),
        ("train.batch_tokens=100", ["train.batch_tokens", "multiple of data.seq_len"]),
        ("data.verify_checksums=maybe", ["data.verify_checksums", "true or false"]),
    ],
)
def test_invalid_config_values(capsys, tmp_path, config_for, setting, words) -> None:
    config = config_for(tmp_path / "run")
    assert_refused(capsys, ["train", "--config", config, "--set", setting], 2, *words)
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_device_without_a_gpu(capsys, tmp_path, config_for) -> None:
    config = config_for(tmp_path / "run")
    assert_refused(
        capsys, ["train", "--config", config, "--set", "device=cuda"], 2, "'cuda'", "CUDA is not available", "cpu"
    )


def test_missing_config_file(capsys, tmp_path) -> None:
    assert_refused(capsys, ["train", "--config", tmp_path / "nope.yaml"], 2, "nope.yaml", "does not exist")


def test_config_that_is_not_yaml(capsys, tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: {arch: [\n")
    assert_refused(capsys, ["train", "--config", path], 2, "broken.yaml", "not valid YAML")


def test_allow_config_change_needs_resume(capsys, tmp_path, config_for) -> None:
    config = config_for(tmp_path / "run")
    assert_refused(
        capsys, ["train", "--config", config, "--allow-config-change"], 2, "--allow-config-change", "--resume"
    )


@pytest.mark.parametrize("given", ["nope", "nope/tokens"])
def test_missing_data_dir(capsys, tmp_path, config_for, given) -> None:
    config = config_for(tmp_path / "run", data=tmp_path / given)
    line = assert_refused(
        capsys, ["train", "--config", config], 2, f"{tmp_path / 'nope'} does not exist",
        f"tttlm data prepare --out {tmp_path / 'nope'}",
    )  # fmt: skip
    assert "tokens/tokens" not in line


def test_data_dir_without_packed_tokens(capsys, tmp_path, config_for, data_dir) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_dir, data, ignore=shutil.ignore_patterns("tokens"))
    config = config_for(tmp_path / "run", data=data)
    assert_refused(capsys, ["train", "--config", config], 2, "has no packed tokens", f"--out {data}")


def _broken_data(tmp_path, data_dir, file: str, damage) -> tuple:
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    damage(data / "tokens" / file)
    return data, fingerprint(data)


@pytest.mark.parametrize(
    ("file", "damage", "words"),
    [
        ("train.bin", flip_byte, ["train.bin", "sha256", "tttlm data prepare --out"]),  # corrupted in place
        ("val.bin", flip_byte, ["val.bin", "sha256"]),
        # a document boundary moved (the low byte of the next-to-last offset), same size
        ("train.idx.npy", lambda path: flip_byte(path, -16), ["train.idx.npy", "sha256"]),
        ("train.bin", truncate, ["train.bin", "should hold", "re-pack"]),
        ("train.idx.npy", truncate, ["train.idx.npy", "unreadable", "re-pack"]),
        ("meta.json", truncate, ["meta.json", "not valid JSON", "re-pack"]),
        ("val.bin", os.remove, ["val.bin", "missing"]),
    ],
)
def test_broken_token_files_are_refused_at_start(capsys, tmp_path, config_for, data_dir, file, damage, words) -> None:
    data, before = _broken_data(tmp_path, data_dir, file, damage)
    assert_refused(capsys, ["train", "--config", config_for(tmp_path / "run", data=data)], 2, *words)
    assert fingerprint(data) == before
    assert not list_checkpoints(tmp_path / "run")


def test_offsets_that_do_not_fit_the_tokens(capsys, tmp_path, config_for, data_dir) -> None:
    data, _ = _broken_data(tmp_path, data_dir, "train.idx.npy", lambda path: np.save(path, np.arange(3)))
    assert_refused(
        capsys, ["train", "--config", config_for(tmp_path / "run", data=data)], 2, "train.idx.npy", "re-pack"
    )


def test_meta_of_another_format(capsys, tmp_path, config_for, data_dir) -> None:
    def other_format(path) -> None:
        path.write_text(json.dumps({**json.loads(path.read_text()), "format": 99}))

    data, _ = _broken_data(tmp_path, data_dir, "meta.json", other_format)
    assert_refused(capsys, ["train", "--config", config_for(tmp_path / "run", data=data)], 2, "meta.json", "format-1")


def test_corrupted_tokens_are_refused_on_resume(capsys, tmp_path, config_for, finished_run, data_dir) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    data, before = _broken_data(tmp_path, data_dir, "train.bin", flip_byte)
    checkpoints = fingerprint(run)
    config = config_for(run, data=data, **{"train.steps": 6})
    assert_refused(capsys, ["train", "--config", config, "--resume"], 2, "train.bin", "sha256")
    assert fingerprint(run) == checkpoints
    assert fingerprint(data) == before


def test_skipping_the_checksums_says_what_it_skips(capsys, tmp_path, config_for, data_dir) -> None:
    data, _ = _broken_data(tmp_path, data_dir, "train.bin", flip_byte)
    config = config_for(tmp_path / "run", data=data, **{"train.steps": 2, "data.verify_checksums": False})
    code, err = run_cli(capsys, "train", "--config", config)
    assert code == 0, err
    assert f"not checking {data / 'tokens' / 'train.bin'}" in err
    assert "go unnoticed" in err


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["binary.txt", "NUL bytes", "binary"]),
        ("latin1.txt", "Caf\xe9 cr\xe8me".encode("latin-1"), ["latin1.txt", "not valid UTF-8", "0xe9"]),
        ("rows.jsonl", b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "caf\xe9"}\n', ["rows.jsonl:3", "UTF-8"]),
        ("rows.jsonl", b'{"text": "fine"}\n{"text": \n', ["rows.jsonl:2", "not valid JSON"]),
        ("rows.jsonl", b'{"body": "no text field"}\n', ["rows.jsonl:1", "'text'", "--text-field"]),
    ],
)
def test_bad_text_input(capsys, tmp_path, name, content, words) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "prepared"
    assert_refused(capsys, ["data", "prepare", "--input", source, "--out", out, "--no-progress"], 1, *words)
    assert not (out / "tokens").exists()
    assert source.read_bytes() == content


def test_missing_input(capsys, tmp_path) -> None:
    out = tmp_path / "prepared"
    assert_refused(capsys, ["data", "prepare", "--input", tmp_path / "gone.txt", "--out", out], 1, "gone.txt")
