"""Checkpoint files: safetensors + JSON round trips, tied weights stored once, and every kind of damage detected."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tttlm.models import TTTConfig, TTTForCausalLM
from tttlm.train.checkpoint import (
    CorruptCheckpointError,
    capture_rng,
    flatten_optimizer,
    latest_valid,
    list_checkpoints,
    load,
    remove_temporaries,
    restore_rng,
    save,
    unflatten_optimizer,
    verify,
)
from tttlm.train.distributed import DistContext

CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _model_and_optimizer(seed: int = 0) -> tuple[TTTForCausalLM, torch.optim.AdamW]:
    torch.manual_seed(seed)
    config = TTTConfig.from_preset("tiny", vocab_size=64, hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=1, num_attention_heads=2, mini_batch_size=4)  # fmt: skip
    model = TTTForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return model, optimizer


def _save(run_dir, step: int, model, optimizer, keep_last: int = 3):
    return save(run_dir, step, model=model, optimizer=optimizer, ctx=CTX, train_state={"step": step},
                config={"seed": 0}, keep_last=keep_last)  # fmt: skip


def test_round_trip(tmp_path) -> None:
    model, optimizer = _model_and_optimizer(0)
    path = _save(tmp_path, 1, model, optimizer)
    payload = verify(path)
    assert payload["step"] == 1
    assert set(payload["files"]) == {"model.safetensors", "config.json", "optimizer.safetensors", "rng.safetensors"}
    # the tied LM head is stored once, as an alias of the embedding
    assert payload["weights"]["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert "lm_head.weight" not in load_file(path / "model.safetensors")

    other, other_optimizer = _model_and_optimizer(1)
    load(path, payload, model=other, optimizer=other_optimizer, ctx=CTX)
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert other.lm_head.weight is other.model.embed_tokens.weight  # still tied
    state, other_state = optimizer.state_dict()["state"], other_optimizer.state_dict()["state"]
    for key in state:
        for field in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key][field], other_state[key][field])


def test_optimizer_state_flattening() -> None:
    model, optimizer = _model_and_optimizer()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    tensors, structure = flatten_optimizer(state)
    json.dumps(structure)  # the non-tensor part is plain JSON
    assert all(key.startswith("state/model.") or key.startswith("state/lm_head") for key in tensors)
    back = unflatten_optimizer(tensors, structure)
    assert back["state"].keys() == state["state"].keys()
    assert back["param_groups"][0]["betas"] == list(state["param_groups"][0]["betas"])


def test_rng_round_trip() -> None:
    state = capture_rng(torch.device("cpu"))
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state, torch.device("cpu"))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def _damage(path, how: str) -> None:
    if how == "flip a byte":
        data = bytearray((path / "optimizer.safetensors").read_bytes())
        data[len(data) // 2] ^= 0x01
        (path / "optimizer.safetensors").write_bytes(bytes(data))
    elif how == "truncate":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "delete a file":
        (path / "rng.safetensors").unlink()
    elif how == "truncate the json":
        text = (path / "checkpoint.json").read_text()
        (path / "checkpoint.json").write_text(text[: len(text) // 2])
    elif how == "edit the json":
        payload = json.loads((path / "checkpoint.json").read_text())
        payload["step"] = 7
        (path / "checkpoint.json").write_text(json.dumps(payload))
    elif how == "no json":
        (path / "checkpoint.json").unlink()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("flip a byte", "optimizer.safetensors does not match its sha256"),
        ("truncate", r"model.safetensors has \d+ bytes, expected \d+ \(truncated"),
        ("delete a file", "rng.safetensors is missing"),
        ("truncate the json", "not valid JSON"),
        ("edit the json", "does not match its own checksum"),
        ("no json", "no checkpoint.json"),
    ],
)
def test_damage_is_detected(tmp_path, how: str, message: str) -> None:
    model, optimizer = _model_and_optimizer()
    path = _save(tmp_path, 1, model, optimizer)
    _damage(path, how)
    with pytest.raises(CorruptCheckpointError, match=message):
        verify(path)


def test_latest_valid_walks_back_and_reports(tmp_path) -> None:
    model, optimizer = _model_and_optimizer()
    for step in (2, 4, 6):
        _save(tmp_path, step, model, optimizer)
    _damage(tmp_path / "checkpoints" / "step-00000006", "flip a byte")
    _damage(tmp_path / "checkpoints" / "step-00000004", "truncate")
    reports: list[str] = []
    path, payload = latest_valid(tmp_path, report=reports.append)
    assert path.name == "step-00000002"
    assert payload["step"] == 2
    assert len(reports) == 2
    assert "step-00000006" in reports[0]
    assert "step-00000004" in reports[1]
    _damage(path, "no json")
    with pytest.raises(CorruptCheckpointError, match="every checkpoint"):
        latest_valid(tmp_path, report=reports.append)
    assert latest_valid(tmp_path / "elsewhere") is None


def test_keep_last_and_temporaries(tmp_path) -> None:
    model, optimizer = _model_and_optimizer()
    for step in range(1, 6):
        _save(tmp_path, step, model, optimizer, keep_last=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 5]
    # an interrupted write leaves a temporary directory: never listed, removed on the next start
    tmp = tmp_path / "checkpoints" / ".tmp-step-00000006-123"
    shutil.copytree(tmp_path / "checkpoints" / "step-00000005", tmp)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 5]
    remove_temporaries(tmp_path)
    assert not tmp.exists()
