"""Checkpoints: safetensors for every tensor, JSON for everything else, sha256 for every file. No pickle.

A checkpoint is a directory ``<run>/checkpoints/step-00000100/``::

    model.safetensors      full model weights (tied tensors stored once, the aliases listed in checkpoint.json)
    config.json            the model config, so the directory also loads with ``from_pretrained``
    optimizer.safetensors  AdamW state tensors, keyed ``state/<parameter name>/<exp_avg|exp_avg_sq|step>``
    rng.safetensors        each process's torch (and CUDA) generator state and numpy key array
    checkpoint.json        step, data position, config, optimizer param groups (by parameter name), Python/numpy
                           RNG scalars, and the size and sha256 of each file above; plus a sha256 of itself

It is written into a temporary directory and renamed into place, so a crash mid-write leaves no half checkpoint
under a real name; every file gets the mode of a plain ``open`` (0o666 less the umask: ``io.apply_umask``).
``verify`` recomputes every checksum; ``latest_valid`` walks back from the newest checkpoint, reporting each corrupt
one, and never loads a checkpoint that fails verification.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from tttlm.data.io import apply_umask, fsync_dir, replace_dir, sha256_file
from tttlm.train.distributed import DistContext, barrier, gather_objects, unwrap
from tttlm.train.run_dir import RunDir

STATE_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
EXPORT_MANIFEST = "export.json"  # in the final model directory: its files' sizes and sha256s (``write_export``)
FORMAT = 1
_TMP = ".tmp-"  # prefix of directories being written (checkpoints, the final model)
_NAME = re.compile(r"^step-(\d+)$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint failed verification (missing, truncated or altered files); it must not be loaded."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint directory of a run, oldest first (temporary directories excluded)."""
    root = RunDir(Path(run_dir)).checkpoints
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def remove_temporaries(run_dir: Path) -> None:
    """Delete leftovers of checkpoint and final-model writes that were interrupted (``.tmp-*`` directories, and the
    ``.model.old-*`` an interrupted replacement of ``model/`` leaves)."""
    run = RunDir(Path(run_dir))
    for root, prefixes in ((run.checkpoints, (_TMP,)), (run.path, (_TMP, f".{run.model.name}.old-"))):
        if root.is_dir():
            for path in root.iterdir():
                if path.is_dir() and path.name.startswith(prefixes):
                    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- RNG


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's generator states (torch CPU and CUDA, numpy's global, Python's ``random``) as plain data.

    Byte strings, not tensors, so that the states of all processes can be gathered on the main one.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state().numpy().tobytes(),
        "cuda": torch.cuda.get_rng_state(device).numpy().tobytes() if device.type == "cuda" else None,
        "numpy_keys": np.asarray(keys, dtype=np.uint32).tobytes(),
        "numpy": [name, int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Put back the generator states captured by ``capture_rng``."""
    torch.set_rng_state(torch.frombuffer(bytearray(state["torch"]), dtype=torch.uint8))
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(torch.frombuffer(bytearray(state["cuda"]), dtype=torch.uint8), device)
    name, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.frombuffer(state["numpy_keys"], dtype=np.uint32).copy(), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


# ---------------------------------------------------------------- flattening state into tensors + JSON


def tied_names(model: nn.Module) -> dict[str, str]:
    """{alias: name} for parameters registered under several names (tied weights), the first name kept."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def _dedupe(state: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """The state without the aliases of tied weights (gathered state may hold them as separate copies)."""
    return {name: t.detach().contiguous() for name, t in state.items() if name not in aliases}


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict keyed by parameter names -> (tensors for safetensors, the rest for JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{param}/{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(param, {})[key] = value
    groups = [{k: _json_value(v) for k, v in group.items()} for group in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten_optimizer``."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, rest = key.split("/", 1)
        param, name = rest.rsplit("/", 1)
        state.setdefault(param, {})[name] = value
    for param, entries in structure.get("scalars", {}).items():
        state.setdefault(param, {}).update(entries)
    return {"state": state, "param_groups": structure["param_groups"]}


# ---------------------------------------------------------------- saving


def _self_checksum(payload: dict[str, Any]) -> str:
    body = {k: v for k, v in payload.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _file_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """{name: {"bytes", "sha256"}} of every file in ``directory``, each given the umask's mode and flushed to disk."""
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            apply_umask(path)  # safetensors >= 0.8 writes its files 0600 whatever the umask
            _fsync_file(path)
            files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def _write_sealed_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` plus a sha256 of itself, written and flushed to disk (the last file of a directory being sealed)."""
    payload["checksum"] = _self_checksum(payload)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def save(
    run_dir: Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext,
    train_state: dict[str, Any],
    config: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write the checkpoint of ``step`` (every process must call this: gathering sharded state is collective).

    The main process writes ``<run>/checkpoints/step-XXXXXXXX`` atomically and then keeps only the newest
    ``keep_last`` checkpoints. Returns the checkpoint's path.
    """
    model_state = get_model_state_dict(model, options=_FULL)
    optim_state = get_optimizer_state_dict(model, optimizer, options=_FULL)
    rng_states = gather_objects(capture_rng(ctx.device), ctx)
    root = RunDir(Path(run_dir)).checkpoints
    final = root / checkpoint_name(step)
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f"{_TMP}{checkpoint_name(step)}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        aliases = {a: n for a, n in tied_names(unwrap(model)).items() if a in model_state and n in model_state}
        weights = _dedupe(model_state, aliases)
        save_file(weights, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        unwrap(model).config.to_json_file(tmp / "config.json")
        optim_tensors, optim_structure = flatten_optimizer(optim_state)
        save_file(optim_tensors, tmp / OPTIMIZER_FILE)
        rng_tensors: dict[str, torch.Tensor] = {}
        rng_json = []
        for rank, state in enumerate(rng_states):
            rng_tensors[f"rank{rank}/torch"] = _bytes_tensor(state["torch"])
            rng_tensors[f"rank{rank}/numpy_keys"] = _bytes_tensor(state["numpy_keys"])
            if state["cuda"] is not None:
                rng_tensors[f"rank{rank}/cuda"] = _bytes_tensor(state["cuda"])
            rng_json.append({"numpy": state["numpy"], "python": state["python"]})
        save_file(rng_tensors, tmp / RNG_FILE)
        payload = {
            "format": FORMAT,
            "step": step,
            "train_state": train_state,
            "config": config,
            "weights": {"file": WEIGHTS_FILE, "aliases": aliases},
            "optimizer": optim_structure,
            "rng": rng_json,
            "files": _file_manifest(tmp),
        }
        _write_sealed_json(tmp / STATE_FILE, payload)
        fsync_dir(tmp)
        if final.exists():  # a re-run of the same step (after a resume): the new one replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(ctx)
    return final


# ---------------------------------------------------------------- the final model


def write_export(out: Path, write: Callable[[Path], None], *, step: int) -> None:
    """Write a final model directory ``out`` atomically: ``write(tmp)`` fills a temporary directory beside it, then
    ``EXPORT_MANIFEST`` records each file's size and sha256, everything is flushed to disk and the directory is renamed
    into place (an older ``out`` is replaced). A kill at any moment leaves either the old ``out`` or the new one."""
    tmp = out.with_name(f"{_TMP}{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    _write_sealed_json(tmp / EXPORT_MANIFEST, {"format": FORMAT, "step": step, "files": _file_manifest(tmp)})
    fsync_dir(tmp)
    replace_dir(tmp, out)


def verify_export(model_dir: Path) -> dict[str, Any]:
    """The parsed ``EXPORT_MANIFEST`` of a final model directory whose files all match it; ``CorruptCheckpointError``
    saying what is wrong otherwise (a model written before exports had a manifest fails too)."""
    return _read_sealed(Path(model_dir), EXPORT_MANIFEST, "tttlm model export")


# ---------------------------------------------------------------- verifying and loading


def verify(path: Path) -> dict[str, Any]:
    """The parsed ``checkpoint.json`` if every file is present with its recorded size and sha256.

    Raises ``CorruptCheckpointError`` saying what is wrong otherwise.
    """
    return _read_sealed(Path(path), STATE_FILE, "tttlm checkpoint")


def _read_sealed(path: Path, manifest: str, kind: str) -> dict[str, Any]:
    """The parsed ``path/manifest`` if it is intact and every file it lists has its recorded size and sha256."""
    state_file = path / manifest
    if not state_file.exists():
        raise CorruptCheckpointError(f"{path.name}: no {manifest} (the write did not finish)")
    try:
        payload = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"{path.name}: {manifest} is not valid JSON ({error}); truncated?") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CorruptCheckpointError(f"{path.name}: {manifest} is not a format-{FORMAT} {kind}")
    if payload.get("checksum") != _self_checksum(payload):
        raise CorruptCheckpointError(f"{path.name}: {manifest} does not match its own checksum (altered)")
    for name, info in payload["files"].items():
        file = path / name
        if not file.exists():
            raise CorruptCheckpointError(f"{path.name}: {name} is missing")
        size = file.stat().st_size
        if size != info["bytes"]:
            raise CorruptCheckpointError(f"{path.name}: {name} has {size} bytes, expected {info['bytes']} (truncated?)")
        if sha256_file(file) != info["sha256"]:
            raise CorruptCheckpointError(f"{path.name}: {name} does not match its sha256 (corrupt)")
    return payload


def latest_valid(run_dir: Path, report: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that passes ``verify`` (and its parsed JSON); None if the run has no checkpoint.

    Each corrupt checkpoint met on the way is reported; if checkpoints exist but none is valid,
    ``CorruptCheckpointError`` is raised rather than silently starting over.
    """
    checkpoints = list_checkpoints(run_dir)
    problems = []
    for _, path in reversed(checkpoints):
        try:
            return path, verify(path)
        except CorruptCheckpointError as error:
            report(f"skipping corrupt checkpoint {error}")
            problems.append(str(error))
    if checkpoints:
        raise CorruptCheckpointError(
            f"every checkpoint in {RunDir(Path(run_dir)).checkpoints} is corrupt ({'; '.join(problems)}); "
            "delete them to start over, or restore a good copy"
        )
    return None


def load_weights(path: Path, payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a verified checkpoint by parameter name, tied names included (saved once)."""
    weights = load_file(Path(path) / payload["weights"]["file"])
    for alias, name in payload["weights"]["aliases"].items():
        weights[alias] = weights[name]
    return weights


def load(
    path: Path, payload: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> None:
    """Load weights, optimizer state and this process's RNG state from a verified checkpoint (every process)."""
    path = Path(path)
    weights = load_weights(path, payload)
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=True))
    optim_state = unflatten_optimizer(load_file(path / OPTIMIZER_FILE), payload["optimizer"])
    # strict=False: a parameter that has had no gradient yet has no AdamW state to restore (e.g. LaCT's learning-rate
    # projection while the sequences are no longer than one chunk); the files were verified against their sha256
    set_optimizer_state_dict(
        model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True, strict=False)
    )
    rng_tensors = load_file(path / RNG_FILE)
    if ctx.rank < len(payload["rng"]):
        prefix = f"rank{ctx.rank}/"
        state = {k[len(prefix) :]: v.numpy().tobytes() for k, v in rng_tensors.items() if k.startswith(prefix)}
        state.setdefault("cuda", None)
        state.update(payload["rng"][ctx.rank])
        restore_rng(state, ctx.device)
