"""Perplexity vs context length, and mean loss at each token index, on long held-out documents.

Definitions (both evaluators). A document's token ids come from the packed split without their trailing
end-of-text id; the model reads ``[eos] + document`` (the end-of-text id is also the tokenizer's BOS, and it is what
precedes every document in training), so document token t is predicted from eos + tokens ``[0, t)``. With context
length L, the model reads L tokens and makes L predictions: document tokens 0 … L − 1.

- ``perplexity_vs_context``: for each L, the documents with at least L tokens (up to ``max_documents`` of them, in
  split order), each scored on its first L tokens; the mean loss over all L × documents predictions and exp of it.
  A document is streamed once, at the largest L it qualifies for: losses at smaller L are prefixes of it (causal).
- ``loss_by_position``: the mean over documents with at least ``length`` tokens of the loss at each index t < length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from tttlm.data.packing import PackedDataset
from tttlm.eval.token_loss import token_losses


class NotEnoughDataError(ValueError):
    """No held-out document is long enough for a requested context length."""


def long_documents(
    data: PackedDataset, min_tokens: int, max_documents: int | None = None
) -> list[tuple[int, np.ndarray]]:
    """Documents of ``data`` with at least ``min_tokens`` tokens (trailing end-of-text dropped), in split order.

    Returns (document index, (length,) int64 ids) pairs.
    """
    out = []
    for index in range(data.num_documents):
        doc = data.document(index)
        if doc.size and int(doc[-1]) == data.eos_token_id:
            doc = doc[:-1]
        if doc.size >= min_tokens:
            out.append((index, doc.astype(np.int64)))
            if max_documents is not None and len(out) >= max_documents:
                break
    return out


class NonFiniteLossError(ValueError):
    """The model gives a non-finite loss (NaN or inf): its weights are broken, no result can be reported."""


def document_losses(model: torch.nn.Module, doc: np.ndarray, length: int, eos_id: int, chunk_size: int) -> np.ndarray:
    """(length,) float64 losses of document tokens 0 … length − 1, the model reading ``[eos] + doc[: length − 1]``;
    ``NonFiniteLossError`` if any is NaN or inf (a perplexity of NaN is no result)."""
    ids = np.concatenate([[eos_id], doc[:length]])
    losses = token_losses(model, ids, chunk_size)
    if not np.isfinite(losses).all():
        first = int(np.flatnonzero(~np.isfinite(losses))[0])
        raise NonFiniteLossError(
            f"the model gives a non-finite loss ({losses[first]}) at token {first} of a {length}-token document: its "
            "weights are broken (did training diverge?); evaluate an earlier checkpoint"
        )
    return losses


@dataclass
class ContextResult:
    """Perplexity at one context length (``loss`` in nats per token; NaN values when no document qualified)."""

    context: int
    documents: int
    tokens: int
    loss: float
    ppl: float


@dataclass
class PerplexityReport:
    """``perplexity_vs_context``'s result; ``skipped`` lists context lengths no document reached."""

    results: list[ContextResult]
    skipped: list[int] = field(default_factory=list)
    longest_document: int = 0

    def to_json(self) -> dict:
        return {
            "results": [asdict(r) for r in self.results],
            "skipped": self.skipped,
            "longest_document": self.longest_document,
        }


def longest_document(data: PackedDataset) -> int:
    """Tokens in the longest document of the split (its end-of-text id not counted)."""
    lengths = np.diff(data.offsets)
    return int(lengths.max()) - 1 if lengths.size else 0  # minus the end-of-text id


def perplexity_vs_context(
    model: torch.nn.Module,
    data: PackedDataset,
    contexts: Sequence[int],
    *,
    chunk_size: int = 2048,
    max_documents: int | None = 16,
    progress: Callable[[str], None] | None = None,
) -> PerplexityReport:
    """Mean loss and perplexity at each context length of ``contexts`` (see the module docstring).

    Context lengths longer than every document are listed in ``skipped``; if all are, ``NotEnoughDataError``.
    """
    contexts = sorted(set(contexts))
    longest = longest_document(data)
    usable = [c for c in contexts if c <= longest]
    if not usable:
        raise NotEnoughDataError(
            f"no {data.split} document has {min(contexts)} tokens (the longest has {longest}); use shorter --contexts"
        )
    # documents per context length: the first max_documents documents that are long enough
    chosen = {c: dict(long_documents(data, c, max_documents)) for c in usable}
    per_doc: dict[int, np.ndarray] = {}
    docs = {key: doc for table in chosen.values() for key, doc in table.items()}
    for n, (key, doc) in enumerate(docs.items()):
        length = max(c for c in usable if key in chosen[c])
        if progress:
            progress(f"document {n + 1}/{len(docs)}: {length} tokens")
        per_doc[key] = document_losses(model, doc, length, data.eos_token_id, chunk_size)
    results = []
    for c in usable:
        losses = [per_doc[key][:c] for key in chosen[c]]
        mean = float(np.mean(np.concatenate(losses)))
        results.append(ContextResult(c, len(losses), c * len(losses), mean, math.exp(mean)))
    return PerplexityReport(results, [c for c in contexts if c > longest], longest)


def loss_by_position(
    model: torch.nn.Module,
    data: PackedDataset,
    length: int,
    *,
    chunk_size: int = 2048,
    max_documents: int | None = 16,
) -> tuple[np.ndarray, int]:
    """(length,) float64 mean loss at each token index over documents with >= ``length`` tokens, and their count."""
    docs = long_documents(data, length, max_documents)
    if not docs:
        raise NotEnoughDataError(
            f"no {data.split} document has {length} tokens (the longest has {longest_document(data)}); "
            "use a smaller --length"
        )
    total = np.zeros(length, dtype=np.float64)
    for _, doc in docs:
        total += document_losses(model, doc, length, data.eos_token_id, chunk_size)
    return total / len(docs), len(docs)


def log_smooth(values: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Moving average whose window grows with the index, for log-x plots: entry t averages indices in
    ``[t (1 − fraction), t (1 + fraction)]`` (at least t itself). (T,) -> (T,)."""
    values = np.asarray(values, dtype=np.float64)
    t = np.arange(values.size)
    lo = np.floor(t * (1 - fraction)).astype(np.int64)
    hi = np.minimum(np.ceil(t * (1 + fraction)).astype(np.int64), values.size - 1)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    return (sums[hi + 1] - sums[lo]) / (hi + 1 - lo)
