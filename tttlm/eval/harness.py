"""``tttlm eval harness``: lm-evaluation-harness on a checkpoint, through the harness's own ``hf`` model.

The harness loads the model directory as any Hugging Face causal LM (``AutoModelForCausalLM`` with
``trust_remote_code=True``: see ``models/remote_code.py``), so what runs is exactly what
``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True`` runs; this command only fills in the
arguments and knows our own tasks (``harness_tasks/``: ``tttlm_cloze``, multiple choice scored by loglikelihood, and
``tttlm_continue``, a short greedy generation), which run offline. The harness is an optional extra:
``pip install -e ".[eval]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tttlm.data.io import write_json_atomic
from tttlm.eval.loading import CheckpointError, resolve_checkpoint

TASKS_DIR = Path(__file__).parent / "harness_tasks"
OUR_TASKS = ("tttlm_cloze", "tttlm_continue")


def model_args(model_dir: Path | str, dtype: str = "float32") -> str:
    """The ``--model_args`` of the harness's ``hf`` model for a tttlm model directory."""
    return f"pretrained={Path(model_dir).resolve()},trust_remote_code=True,dtype={dtype}"


def run_harness(
    model_dir: Path | str,
    tasks: list[str],
    *,
    batch_size: int = 1,
    limit: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    log_samples: bool = False,
) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on ``model_dir`` with our tasks available; returns the harness's results dict
    (``results`` per task; ``samples`` with every request's response when ``log_samples``)."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ImportError('lm-evaluation-harness is not installed: pip install -e ".[eval]"') from None
    return lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args(model_dir, dtype),
        tasks=tasks,
        batch_size=batch_size,
        limit=limit,
        device=device,
        log_samples=log_samples,
        task_manager=TaskManager(include_path=str(TASKS_DIR)),
    )


def _harness(args: argparse.Namespace) -> int:
    try:
        checkpoint = resolve_checkpoint(args.ckpt)
        results = run_harness(
            checkpoint.model_dir, args.tasks, batch_size=args.batch_size, limit=args.limit, device=args.device
        )
    except (CheckpointError, ImportError) as error:
        print(f"tttlm eval harness: error: {error}", file=sys.stderr)
        return 2
    out = args.out or checkpoint.eval_dir
    summary = {"checkpoint": str(checkpoint.model_dir), "tasks": args.tasks, "results": results["results"]}
    write_json_atomic(out / "harness.json", summary)
    for task, metrics in results["results"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        print(f"{task}: {shown}")
    print(f"wrote {out / 'harness.json'}")
    return 0


def add_harness_command(evals: Any) -> None:
    """Register ``tttlm eval harness`` on the ``eval`` sub-parsers."""
    from tttlm.argtypes import positive_int

    harness = evals.add_parser(
        "harness",
        help="lm-evaluation-harness tasks (ours, offline: tttlm_cloze, tttlm_continue; or any the harness knows)",
        description="Run lm-evaluation-harness's hf model on the checkpoint (AutoModelForCausalLM with "
        "trust_remote_code=True) and write harness.json to --out (default: <run>/eval).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    harness.add_argument("--ckpt", type=Path, required=True, help="run directory or model directory")
    harness.add_argument("--tasks", type=lambda t: t.split(","), default=list(OUR_TASKS), help="comma-separated")
    harness.add_argument("--batch-size", type=positive_int, default=1, help="requests per forward call")
    harness.add_argument("--limit", type=positive_int, default=None, help="documents per task (default: all)")
    harness.add_argument("--device", default="cpu", help="torch device")
    harness.add_argument("--out", type=Path, help="output directory")
    harness.set_defaults(func=_harness)
