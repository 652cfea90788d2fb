"""``tttlm train --config configs/<name>.yaml [--resume]`` (the same command under torchrun).

Exit status: 0 done; 1 stopped on a non-finite loss or gradient norm (``train.on_nonfinite: stop``; the message names
the checkpoint to resume from); 2 a bad config, data, checkpoint, device or run directory (the message names it and
the fix); 128 + N stopped by signal N after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from tttlm.data.packing import DataMismatchError
    from tttlm.train.checkpoint import CorruptCheckpointError
    from tttlm.train.config import ConfigError
    from tttlm.train.loop import NonFiniteError, TrainingInterrupted, train

    if args.allow_config_change and not args.resume:
        print("tttlm train: error: --allow-config-change only applies with --resume", file=sys.stderr)
        return 2
    overrides = [*args.set, *([f"model.init_from={args.init_from}"] if args.init_from is not None else [])]
    if args.compile:
        overrides.append("train.compile=true")
    try:
        run_dir = train(
            args.config,
            resume=args.resume,
            overrides=overrides,
            progress=False if args.no_progress else None,
            allow_config_change=args.allow_config_change,
        )
    except TrainingInterrupted as stop:
        print(f"tttlm train: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except NonFiniteError as error:
        print(f"tttlm train: error: {error}", file=sys.stderr)
        return 1
    except (ConfigError, DataMismatchError, CorruptCheckpointError, ValueError, OSError) as error:
        # OSError: a file the run needs is missing or cannot be written (FileNotFoundError, PermissionError, ...)
        print(f"tttlm train: error: {error}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}")
    return 0


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tttlm train`` on the top-level sub-command parser."""
    train = commands.add_parser(
        "train",
        help="train a model from a YAML config (single process, or DDP/FSDP2 under torchrun)",
        description=(
            "Train the model a YAML config describes (see configs/): AdamW, warm-up + cosine schedule, gradient "
            "accumulation, periodic validation, JSONL + TensorBoard metrics, checkpoints every N steps and on "
            "SIGINT/SIGTERM. --resume continues exactly from the newest valid checkpoint. Launched with torchrun, "
            "every process runs this same command (DDP, or FSDP2 with distributed.fsdp: true)."
        ),
    )
    train.add_argument("--config", type=Path, required=True, help="YAML config, e.g. configs/tiny.yaml")
    train.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint of the run")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=50 --set optim.lr=1e-3 (repeatable)",
    )
    train.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue even though the optimizer, schedule, batch, seed or precision changed (e.g. a "
        "lower optim.lr after a non-finite loss); the run is then no longer an exact continuation",
    )
    train.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="start from the weights of a run (its final model or newest checkpoint), a checkpoint or a model "
        "directory, with a fresh optimizer and schedule (= --set model.init_from=DIR); the architectures must agree",
    )
    train.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training forward and backward (= --set train.compile=true; inductor, evaluation "
        "stays eager); the first step compiles for one to several minutes on a CPU, see docs/ARCHITECTURE.md",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    train.set_defaults(func=_train)
