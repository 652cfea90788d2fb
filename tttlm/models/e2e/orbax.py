"""Read a TTT-E2E release checkpoint: the ``model_weights`` item of an orbax ``CheckpointManager`` directory.

The release's trainer (``ttt/infra/checkpoint.py``) saves each step as ``<run>/<step>/`` with the items
``model_weights`` and ``opt_state``, each an OCDBT key-value store holding one zarr array per pytree leaf, named by
its path (``language_model.model.wte.weight``). We read ``model_weights`` only, with tensorstore (the library
orbax itself reads them with; the optional extra ``tttlm[orbax]``), and never the optimiser state or any pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tttlm.models.e2e.release import ReleaseFormatError

WEIGHTS_ITEM = "model_weights"
INSTALL_HINT = "pip install 'tttlm[orbax]' (tensorstore, which reads orbax's OCDBT/zarr files)"


def is_release_checkpoint(path: Path) -> bool:
    """Whether ``path`` looks like a release run directory, one ``<step>/`` of it, or its ``model_weights``."""
    return _weights_dir(path, strict=False) is not None


def _steps(run: Path) -> list[Path]:
    return sorted(
        (p for p in run.iterdir() if p.name.isdigit() and (p / WEIGHTS_ITEM).is_dir()), key=lambda p: int(p.name)
    )


def _weights_dir(path: Path, strict: bool = True) -> Path | None:
    """The ``model_weights`` directory of ``path``: itself, ``path/model_weights``, or that of the run's last step."""
    path = Path(path)
    if not path.is_dir():
        if strict:
            raise FileNotFoundError(f"{path} is not a directory: pass a release run directory or one <step>/ in it")
        return None
    if path.name == WEIGHTS_ITEM and (path / "manifest.ocdbt").is_file():
        return path
    if (path / WEIGHTS_ITEM / "manifest.ocdbt").is_file():
        return path / WEIGHTS_ITEM
    steps = _steps(path)
    if steps:
        return steps[-1] / WEIGHTS_ITEM
    if strict:
        raise ReleaseFormatError(
            f"{path} holds no orbax checkpoint: expected <step>/{WEIGHTS_ITEM}/manifest.ocdbt (a release run "
            f"directory or one step of it)"
        )
    return None


def read_model_weights(path: Path) -> tuple[dict[str, np.ndarray], Path]:
    """Every array of the checkpoint's ``model_weights``, by pytree path, as numpy arrays in their stored dtype.

    Args:
        path: a release run directory (its highest step is read), one ``<step>/`` directory, or ``model_weights``.

    Returns:
        (path → array, the ``model_weights`` directory read).

    Raises:
        ImportError: tensorstore is not installed (the message says how to install it).
        ReleaseFormatError / FileNotFoundError: no checkpoint there.
    """
    weights = _weights_dir(path)
    try:
        import tensorstore as ts
    except ImportError as error:
        raise ImportError(f"reading an orbax checkpoint needs tensorstore: {INSTALL_HINT}") from error
    base = {"driver": "ocdbt", "base": f"file://{weights.resolve()}/"}
    keys = [k.decode() for k in ts.KvStore.open(base).result().list().result()]
    names = sorted({k.rsplit("/", 1)[0] for k in keys if k.endswith("/.zarray")})
    if not names:
        raise ReleaseFormatError(f"{weights} has no zarr arrays: not an orbax model_weights item")
    arrays = {}
    for name in names:
        store = ts.open({"driver": "zarr", "kvstore": {**base, "path": f"{name}/"}}, read=True).result()
        arrays[name] = np.asarray(store.read().result())
    return arrays, weights
