"""``tttlm bench decode``: milliseconds per generated token after contexts of growing length.

A TTT model's state has a fixed size (the inner weights, the open mini-batch's gradient sums and conv states),
so decoding one token costs the same after 1K or 32K tokens of context; this measures it. The context is
prefilled in chunks with the dual form (random token ids: the cost does not depend on the values), and at each
requested length a copy of the state decodes ``--tokens`` tokens one at a time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tttlm.models import TTTCache, TTTConfig, TTTForCausalLM


@dataclass(frozen=True)
class DecodeRecord:
    """One measurement: median decode latency after ``context`` tokens (spread in min/max)."""

    model: str
    context: int
    ms_per_token: float
    min_ms: float
    max_ms: float
    tokens: int
    size: str
    layer_type: str
    backbone: str
    parameters: int


def _decode_ms(
    model: TTTForCausalLM, cache: TTTCache, tokens: int, warmup: int, generator: torch.Generator
) -> list[float]:
    """Decode ``warmup + tokens`` random tokens from a copy of ``cache``; milliseconds of the timed ones."""
    state = cache.detach()  # a copy: the prefill continues from ``cache`` afterwards
    vocab = model.config.vocab_size
    samples = []
    for i in range(warmup + tokens):
        ids = torch.randint(vocab, (1, 1), generator=generator)
        start = time.perf_counter()
        model(input_ids=ids, past_key_values=state, use_cache=True)
        if i >= warmup:
            samples.append(1e3 * (time.perf_counter() - start))
    return samples


@torch.no_grad()
def run_decode_bench(
    sizes: Sequence[str] = ("tiny", "125m"),
    layer_types: Sequence[str] = ("linear", "mlp"),
    contexts: Sequence[int] = (1024, 4096, 16384, 32768),
    tokens: int = 32,
    warmup: int = 4,
    prefill_chunk: int = 2048,
    backbone: str = "transformer",
    seed: int = 0,
) -> list[DecodeRecord]:
    """Measure decode ms/token after each context length, for every (size, layer type) TTT model."""
    records: list[DecodeRecord] = []
    contexts = sorted(contexts)
    with Progress(transient=True) as progress:
        task = progress.add_task("bench decode", total=len(sizes) * len(layer_types) * contexts[-1])
        for size in sizes:
            for layer_type in layer_types:
                torch.manual_seed(seed)
                config = TTTConfig.from_preset(size, layer_type=layer_type, backbone=backbone)
                model = TTTForCausalLM(config).eval()
                parameters = sum(p.numel() for p in model.parameters())
                name = f"ttt-{layer_type}-{size}"
                generator = torch.Generator().manual_seed(seed)
                cache = TTTCache(config.num_hidden_layers)
                for context in contexts:
                    while cache.seen_tokens < context:
                        n = min(prefill_chunk, context - cache.seen_tokens)
                        progress.update(task, description=f"{name}: prefill to {context}")
                        ids = torch.randint(config.vocab_size, (1, n), generator=generator)
                        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                        progress.advance(task, n)
                    progress.update(task, description=f"{name}: decode after {context}")
                    ms = _decode_ms(model, cache, tokens, warmup, generator)
                    records.append(
                        DecodeRecord(
                            name,
                            context,
                            statistics.median(ms),
                            min(ms),
                            max(ms),
                            tokens,
                            size,
                            layer_type,
                            backbone,
                            parameters,
                        )
                    )
    return records


def print_table(records: Sequence[DecodeRecord], console: Console | None = None) -> None:
    """ms/token per model and context, with the ratio to that model's shortest context."""
    table = Table(title="TTT decode latency (median ms per token; ratio to the shortest context)")
    for col in ("model", "context", "ms/token", "min", "max", "ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    first: dict[str, float] = {}
    for r in records:
        base = first.setdefault(r.model, r.ms_per_token)
        table.add_row(
            r.model,
            str(r.context),
            f"{r.ms_per_token:.2f}",
            f"{r.min_ms:.2f}",
            f"{r.max_ms:.2f}",
            f"{r.ms_per_token / base:.2f}x",
        )
    (console or Console()).print(table)
