"""``tttlm bench e2e``: training tokens/s of TTT-E2E against its sliding-window backbone at equal size.

Training cost is TTT-E2E's stated weakness: every mini-batch of b tokens takes an inner gradient step, and the
outer backward goes through those steps (gradient of gradient). This times one training step (forward with the
loss, then backward; the optimizer step is left out, it costs the same for both at equal parameter count) of
``ttt-e2e`` and ``swa`` (both at the papers' widths: the release's block, TTT-E2E with its prime MLPs on top, about
9% more parameters at tiny) built by the registry at the same size preset and the same window, for several b, with
the exact and the first-order meta-gradient.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from rich.console import Console
from rich.table import Table

from tttlm.bench.cases import check_positive
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.timing import time_call
from tttlm.models import build
from tttlm.models.e2e.configuration import META_GRADIENTS


@dataclass(frozen=True)
class TrainSpeedRecord:
    """One measurement: seconds per training step (median of ``repeats``) and the tokens/s it gives.

    ``mini_batch`` and ``meta_gradient`` are None for the swa baseline; ``ratio_to_swa`` is this model's tokens/s
    divided by swa's at the same size, window, sequence length and batch.
    """

    arch: str
    size: str
    seq: int
    batch: int
    window: int
    mini_batch: int | None
    meta_gradient: str | None
    parameters: int
    seconds: float
    min_seconds: float
    max_seconds: float
    repeats: int
    tokens_per_s: float
    ratio_to_swa: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _training_step(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()

    return step


def run_e2e_bench(
    sizes: Sequence[str] = ("tiny", "125m"),
    seq: int = 512,
    batch: int = 1,
    window: int = 128,
    mini_batch_sizes: Sequence[int] = (16, 64),
    meta_gradients: Sequence[str] = META_GRADIENTS,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    out: RecordsFile | None = None,
) -> list[TrainSpeedRecord]:
    """Training tokens/s of swa and of ttt-e2e (every b and meta-gradient) at each size; float32, on the CPU.

    The models of one size are timed in turns (one step each, ``repeats`` rounds), so that a change in the load of
    a shared machine during the run affects all of them alike; the median step of each is reported.

    Args:
        sizes: registry size presets.
        seq, batch: tokens per sequence and sequences per step (random ids: the cost does not depend on them).
        window: sliding window k of both models.
        mini_batch_sizes: ttt-e2e inner mini-batch sizes b to measure.
        meta_gradients: "exact" and/or "first_order" (see ``E2EConfig.meta_gradient``).
        repeats, warmup: timed rounds and untimed steps per model.
        seed: model init and token ids.
        out: where the records of each size go as soon as its rounds are done (each step is a line of progress).
    """
    check_positive("seq, batch, window, repeats", [seq, batch, window, repeats])
    check_positive("mini_batch_sizes", list(mini_batch_sizes))
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0; got {warmup!r}")
    unknown = [m for m in meta_gradients if m not in META_GRADIENTS]
    if unknown or not meta_gradients:
        raise ValueError(f"meta_gradients must be among {', '.join(META_GRADIENTS)}; got {list(meta_gradients)!r}")
    variants: list[tuple[str, int | None, str | None]] = [("swa", None, None)]
    variants += [("ttt-e2e", b, m) for b in mini_batch_sizes for m in meta_gradients]
    records: list[TrainSpeedRecord] = []
    with CaseProgress("bench e2e", len(sizes) * len(variants) * (warmup + repeats)) as progress:
        for size in sizes:
            steps, parameters = [], []
            for arch, b, meta in variants:
                torch.manual_seed(seed)
                overrides: dict[str, object] = {"sliding_window": window}
                if arch == "ttt-e2e":
                    overrides |= {"mini_batch_size": b, "meta_gradient": meta}
                model = build(arch, size, **overrides).train()
                ids = torch.randint(
                    model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed)
                )
                steps.append(_training_step(model, ids))
                parameters.append(sum(p.numel() for p in model.parameters()))
            samples: list[list[float]] = [[] for _ in variants]
            for round_ in range(-warmup, repeats):
                for (arch, b, meta), step, times in zip(variants, steps, samples, strict=True):
                    what = "warm-up" if round_ < 0 else f"round {round_ + 1}/{repeats}"
                    progress.start(f"{size} {arch}" + (f" b={b} {meta}" if b else "") + f", {what}")
                    seconds = time_call(step, repeats=1, warmup=0).median
                    if round_ >= 0:
                        times.append(seconds)
                    progress.done([], f"{seconds:.3g} s/step")
            swa_rate = seq * batch / statistics.median(samples[0])
            measured = []
            for (arch, b, meta), count, times in zip(variants, parameters, samples, strict=True):
                median = statistics.median(times)
                rate = seq * batch / median
                measured.append(
                    TrainSpeedRecord(
                        arch,
                        size,
                        seq,
                        batch,
                        window,
                        b,
                        meta,
                        count,
                        median,
                        min(times),
                        max(times),
                        len(times),
                        rate,
                        rate / swa_rate,
                    )
                )
            records += measured
            if out is not None:
                out.add(r.to_json() for r in measured)
            del steps
    return records


def print_table(records: Sequence[TrainSpeedRecord], console: Console | None = None) -> None:
    """Tokens/s per model, with the ratio to swa at the same size."""
    table = Table(title="Training speed, forward + backward (median s/step; tokens/s; ratio to swa)")
    for col in ("size", "arch", "b", "meta-gradient", "params", "s/step", "tokens/s", "vs swa"):
        table.add_column(col, justify="left" if col in ("size", "arch", "meta-gradient") else "right")
    for r in records:
        table.add_row(
            r.size,
            r.arch,
            "-" if r.mini_batch is None else str(r.mini_batch),
            r.meta_gradient or "-",
            f"{r.parameters / 1e6:.2f}M",
            f"{r.seconds:.3f}",
            f"{r.tokens_per_s:,.0f}",
            f"{r.ratio_to_swa:.2f}x",
        )
    (console or Console()).print(table)
