"""The evaluations a spec can ask for, each measured on one run through the project's own evaluators, as flat
metrics ``<name>@<point>`` (a point: a context length, a token bin ``lo-hi``, ``train`` for the training length):

=============  ===========================================================================================
kind           metrics
=============  ===========================================================================================
ppl            ``ppl@C``, ``loss@C`` per context C (``tttlm.eval.perplexity.perplexity_vs_context``; ``train``:
               the run's training length)
by_position    ``loss@lo-hi``: the mean loss at token indices lo … hi (1-based) of ``loss_by_position``; the
               whole curve is kept for the plots
forward_time   ``forward_ms@C``: forward time per token on one sequence of C tokens (batch ``batch``, no cache,
               the LM head at the last position only), median of ``repeats`` after a warm-up, on ``clock``
train_time     ``train_ms@C``: forward + backward time per token on ``batch`` sequences of C tokens, on ``clock``
niah           ``niah-<task>@L``: S-NIAH accuracy at prompt length L over ``samples`` samples (random depths)
=============  ===========================================================================================

A trained run also reports ``val_loss`` (the trainer's last validation) and ``tokens_per_s`` (its median training
throughput). Timing is of the model as loaded (weights do not change the time); an arm that is only timed is
initialised from its seed. The ``clock`` of a timing is "wall", "cpu" (the calling thread's CPU time: on a shared
machine a run waiting for a core loses wall time, not CPU time) or "auto" (the default): "cpu" where the model runs
on the CPU with one torch thread, the spec's cpu scale, else "wall" (GPUs, several threads).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from tttlm.experiments.spec import Evaluation

# the evaluations that only time a model (the only ones an untrained arm gets)
TIMINGS = ("forward_time", "train_time")


def _random_ids(vocab: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randint(vocab, shape, generator=torch.Generator().manual_seed(seed))


def timing_clock(clock: str, model: PreTrainedModel) -> str:
    """The clock a timing of ``model`` uses: ``clock`` itself, or for "auto" the CPU time where the model runs on
    the CPU with one torch thread (what the call costs on an idle core) and the wall clock elsewhere."""
    if clock != "auto":
        return clock
    on_cpu = model.device.type == "cpu"
    return "cpu" if on_cpu and torch.get_num_threads() == 1 else "wall"


def forward_ms(model: PreTrainedModel, context: int, batch: int, repeats: int, clock: str = "auto") -> float:
    """Median forward time per token (ms) of ``model`` on ``batch`` random sequences of ``context`` tokens."""
    from tttlm.bench.timing import time_call

    ids = _random_ids(model.config.vocab_size, (batch, context), 0).to(model.device)
    model.eval()
    with torch.no_grad():
        timing = time_call(
            lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1),
            repeats=repeats,
            device=model.device,
            clock=timing_clock(clock, model),
        )
    return 1e3 * timing.median / (batch * context)


def train_ms(model: PreTrainedModel, context: int, batch: int, repeats: int, clock: str = "auto") -> float:
    """Median time per token (ms) of one training forward + backward of ``model`` on ``batch`` × ``context``
    random tokens (the optimizer step is left out: it does not depend on the context)."""
    from tttlm.bench.timing import time_call

    ids = _random_ids(model.config.vocab_size, (batch, context), 0).to(model.device)
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()

    timing = time_call(step, repeats=repeats, device=model.device, clock=timing_clock(clock, model))
    model.zero_grad(set_to_none=True)
    return 1e3 * timing.median / (batch * context)


def training_metrics(run_dir: Path) -> dict[str, float]:
    """``val_loss`` (the last validation of the run) and ``tokens_per_s`` (median over its logged steps)."""
    import statistics

    from tttlm.train import read_metrics

    records = read_metrics(run_dir)
    steps = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    metrics = {"tokens_per_s": float(statistics.median(r["tokens_per_s"] for r in steps))} if steps else {}
    if evals:
        metrics["val_loss"] = float(evals[-1]["val_loss"])
    return metrics


def _contexts(evaluation: Evaluation, seq_len: int) -> list[tuple[str, int]]:
    contexts = evaluation.settings["contexts"]
    return [("train", seq_len)] if contexts == "train" else [(str(c), c) for c in contexts]


def evaluate(
    evaluation: Evaluation,
    model: PreTrainedModel,
    *,
    seq_len: int,
    data_dir: Path | None,
    say: Callable[[str], None],
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The metrics of one evaluation of ``model`` (trained on ``seq_len``-token windows) and the curves to plot."""
    kind, settings = evaluation.kind, evaluation.settings
    if kind in ("forward_time", "train_time"):
        measure, name = (forward_ms, "forward_ms") if kind == "forward_time" else (train_ms, "train_ms")
        metrics = {}
        for label, context in _contexts(evaluation, seq_len):
            say(f"    {name} at {context} tokens")
            metrics[f"{name}@{label}"] = measure(
                model, context, settings["batch"], settings["repeats"], settings["clock"]
            )
        return metrics, {}
    from tttlm.data.packing import PackedDataset

    data = PackedDataset(data_dir, "val")
    data.check_vocab(model.config.vocab_size)
    if kind == "ppl":
        from tttlm.eval.perplexity import perplexity_vs_context

        contexts = _contexts(evaluation, seq_len)
        report = perplexity_vs_context(model, data, [c for _, c in contexts], max_documents=settings["documents"])
        if report.skipped:
            raise ValueError(f"no held-out document reaches context(s) {report.skipped} in {data_dir}")
        by_context = {r.context: r for r in report.results}
        metrics = {}
        for label, context in contexts:
            metrics[f"ppl@{label}"] = by_context[context].ppl
            metrics[f"loss@{label}"] = by_context[context].loss
        return metrics, {}
    if kind == "by_position":
        from tttlm.eval.perplexity import loss_by_position

        curve, _ = loss_by_position(model, data, settings["length"], max_documents=settings["documents"])
        metrics = {f"loss@{lo}-{hi}": float(curve[lo - 1 : hi].mean()) for lo, hi in settings["bins"]}
        return metrics, {"by_position": curve.tolist()}
    return _niah(settings, model, data, data_dir), {}


def _niah(settings: dict[str, Any], model: PreTrainedModel, data: Any, data_dir: Path) -> dict[str, float]:
    from tttlm.data.prepare import TOKENIZER_DIR
    from tttlm.data.tokenizer import load_tokenizer
    from tttlm.eval.niah import NiahTaskMaker, accuracy_table, evaluate_niah
    from tttlm.eval.perplexity import long_documents

    docs = long_documents(data, 1)
    prose = np.concatenate([d for _, d in docs]) if docs else np.zeros(0, dtype=np.int64)
    maker = NiahTaskMaker(load_tokenizer(Path(data_dir) / TOKENIZER_DIR), prose)
    records = evaluate_niah(model, maker, settings["tasks"], settings["lengths"], samples=settings["samples"])
    table = accuracy_table(records)
    return {f"niah-{task}@{length}": float(acc) for task, row in table.items() for length, acc in row.items()}
