"""Multi-query associative recall (MQAR) as Zoology defines it (Arora, Eyuboglu et al., "Zoology", 2023), and one
training run of a registry model on it.

An example of ``seq_len`` tokens starts with ``num_pairs`` key-value pairs ``k_1 v_1 ... k_P v_P`` (keys from the
lower half of the vocabulary, ids 1 ... V/2 − 1, values from the upper half, V/2 ... V − 1, each drawn without
replacement); then every key is queried once, at position ``2P + 2g`` with the gaps g drawn without replacement
from 0 ... (T − 2P)/2 − 1 with probability ∝ a · (g + 1)^(a − 1) (``power_a`` = a, Zoology's 0.01: short gaps are
likelier, as repeated bigrams in text). Every other position of the query region holds a random token of the whole
vocabulary (Zoology's ``random_non_queries``). The model sees the query key and must output its value: the target
of the logits at the query position. Loss and accuracy count those answer positions only.

Accuracy is Zoology's: per example the fraction of its queries answered right, averaged over examples. It is also
split by the key-query distance d = (query position) − (position of the pair's value): "within" a window w when
d < w (a sliding window of w tokens still holds the value), "beyond" otherwise.

Named differences from Zoology, each a knob here: the schedule is cosine over steps (Zoology: over epochs), and the
early stop at 99% test accuracy is checked every ``eval_every`` steps (Zoology: every epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tttlm.models.base import positive_int, positive_number

IGNORE = -100


@dataclass(frozen=True)
class MqarTask:
    """The shape of MQAR examples: vocabulary V, sequence length T, P key-value pairs, power-law exponent a."""

    vocab_size: int = 512
    seq_len: int = 64
    num_pairs: int = 8
    power_a: float = 0.01

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "num_pairs"):
            positive_int("MQAR", name, getattr(self, name))
        if self.seq_len % 2:
            raise ValueError(f"MQAR: seq_len must be even (pairs and queries take two positions); got {self.seq_len}")
        if 4 * self.num_pairs > self.seq_len:
            raise ValueError(
                f"MQAR: {self.num_pairs} pairs and their queries need seq_len >= {4 * self.num_pairs}; "
                f"got {self.seq_len}"
            )
        if self.vocab_size // 2 - 1 < self.num_pairs or self.vocab_size <= self.seq_len:
            raise ValueError(
                f"MQAR: vocab_size {self.vocab_size} is too small: it must exceed seq_len ({self.seq_len}) and its "
                f"lower half must hold {self.num_pairs} distinct keys"
            )
        if not (math.isfinite(self.power_a) and 0 < self.power_a <= 1):
            raise ValueError(f"MQAR: power_a must be in (0, 1] (1: uniform gaps); got {self.power_a!r}")


@dataclass(frozen=True)
class MqarData:
    """``inputs`` (N, T) token ids; ``labels`` (N, T): the value at each query position (the target of the logits
    there), ``IGNORE`` elsewhere; ``distance`` (N, T): at query positions the distance from the pair's value to
    the query, −1 elsewhere."""

    inputs: Tensor
    labels: Tensor
    distance: Tensor

    def to(self, device: torch.device | str) -> MqarData:
        return MqarData(self.inputs.to(device), self.labels.to(device), self.distance.to(device))


def gap_probabilities(space: int, power_a: float) -> np.ndarray:
    """(space,) probabilities of the query gaps 0 ... space − 1: ∝ a · (g + 1)^(a − 1)."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def make_examples(task: MqarTask, num_examples: int, seed: int) -> MqarData:
    """``num_examples`` MQAR examples drawn with ``seed`` (the same seed gives the same examples)."""
    positive_int("MQAR", "num_examples", num_examples)
    rng = np.random.default_rng(seed)
    n, t, pairs, half = num_examples, task.seq_len, task.num_pairs, task.vocab_size // 2
    context = 2 * pairs
    p = gap_probabilities((t - context) // 2, task.power_a)
    keys = np.stack([rng.choice(np.arange(1, half), pairs, replace=False) for _ in range(n)])
    values = np.stack([rng.choice(np.arange(half, task.vocab_size), pairs, replace=False) for _ in range(n)])
    gaps = np.stack([rng.choice(p.size, pairs, replace=False, p=p) for _ in range(n)])
    inputs = rng.integers(0, task.vocab_size, size=(n, t))  # the random non-query tokens
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
    queries = context + 2 * gaps  # (n, pairs): where key i is asked
    rows = np.arange(n)[:, None]
    inputs[rows, queries] = keys
    labels = np.full((n, t), IGNORE, dtype=np.int64)
    labels[rows, queries] = values
    distance = np.full((n, t), -1, dtype=np.int64)
    distance[rows, queries] = queries - (2 * np.arange(pairs) + 1)
    return MqarData(torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(distance))


def _device_of(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def answer_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of (N, T, V) logits against (N, T) labels over the answer positions only."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: MqarData, window: int, batch_size: int = 256) -> dict[str, float]:
    """Answer loss, Zoology's accuracy, and the fraction right within / beyond ``window`` (NaN with no such query).

    Every query of the data counts; ``within`` pools the answers at distance < window, ``beyond`` the others.
    """
    was_training = model.training
    model.eval()
    data = data.to(_device_of(model))
    losses, per_example, right, distance = [], [], [], []
    for start in range(0, data.inputs.shape[0], batch_size):
        x, y = data.inputs[start : start + batch_size], data.labels[start : start + batch_size]
        logits = model(input_ids=x).logits
        mask = y != IGNORE
        hits = (logits.argmax(-1) == y) & mask
        losses.append(answer_loss(logits, y) * mask.sum())
        per_example.append(hits.sum(1) / mask.sum(1))
        right.append(hits[mask])
        distance.append(data.distance[start : start + batch_size][mask])
    model.train(was_training)
    right_all, dist_all = torch.cat(right).float(), torch.cat(distance)
    within = dist_all < window

    def share(selected: Tensor) -> float:
        return float(right_all[selected].mean()) if bool(selected.any()) else float("nan")

    return {
        "loss": float(torch.stack(losses).sum() / (data.labels != IGNORE).sum()),
        "accuracy": float(torch.cat(per_example).mean()),
        "accuracy_within": share(within),
        "accuracy_beyond": share(~within),
        "within_share": float(within.float().mean()),
    }


@dataclass(frozen=True)
class TrainSettings:
    """AdamW (Zoology's weight decay 0.1) with a cosine schedule to 0 over ``steps``; batches drawn from the training
    set in a fresh order each epoch; evaluation every ``eval_every`` steps, stopping once the test accuracy exceeds
    ``stop_at`` (Zoology's 0.99)."""

    lr: float = 3e-3
    steps: int = 2000
    batch_size: int = 64
    weight_decay: float = 0.1
    eval_every: int = 250
    stop_at: float = 0.99

    def __post_init__(self) -> None:
        positive_number("MQAR", "lr", self.lr, "3e-3")
        for name in ("steps", "batch_size", "eval_every"):
            positive_int("MQAR", name, getattr(self, name))


def train(
    model: torch.nn.Module,
    train_data: MqarData,
    test_data: MqarData,
    settings: TrainSettings,
    *,
    window: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` on ``train_data`` (on the model's device); returns ``evaluate`` on ``test_data`` at the end
    plus ``steps`` run and ``train_loss`` (the last step's). Raises FloatingPointError when the loss stops being
    finite."""
    train_data = train_data.to(_device_of(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, settings.steps) / settings.steps))
    )
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(train_data.inputs.shape[0], generator=generator), 0
    model.train()
    metrics: dict[str, float] = {}
    for step in range(1, settings.steps + 1):
        if cursor + settings.batch_size > order.numel():
            order, cursor = torch.randperm(order.numel(), generator=generator), 0
        batch = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size
        loss = answer_loss(model(input_ids=train_data.inputs[batch]).logits, train_data.labels[batch])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"MQAR: the training loss is {loss.item()} at step {step} (lr {settings.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            metrics = {**evaluate(model, test_data, window), "steps": step, "train_loss": loss.item()}
            if progress:
                progress(f"step {step}: train loss {loss.item():.3f}, test accuracy {metrics['accuracy']:.3f}")
            if metrics["accuracy"] > settings.stop_at:
                break
    return metrics


def _tensors(tree: object, depth: int = 0) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree]
    if depth > 6 or isinstance(tree, (str, bytes, int, float, torch.nn.Module)) or tree is None:
        return []
    if isinstance(tree, dict):
        items = list(tree.values())
    elif isinstance(tree, (list, tuple)):
        items = list(tree)
    elif hasattr(tree, "__dict__"):
        items = list(vars(tree).values())
    else:
        return []
    return [t for item in items for t in _tensors(item, depth + 1)]


@torch.no_grad()
def state_bytes(model: torch.nn.Module, seq_len: int) -> int:
    """Bytes a model carries after reading ``seq_len`` tokens: every tensor of its cache (KV cache, recurrent and
    conv states, fast weights), counted once, for one sequence; measured by running it, so no per-arch formula."""
    model.eval()
    ids = torch.zeros(1, seq_len, dtype=torch.long, device=_device_of(model))
    cache = model(input_ids=ids, use_cache=True).past_key_values
    seen: dict[tuple[int, tuple[int, ...]], int] = {}
    for t in _tensors(cache):
        seen[(t.data_ptr(), tuple(t.shape))] = t.numel() * t.element_size()
    return sum(seen.values())
