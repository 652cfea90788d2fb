"""Single-needle-in-a-haystack tasks (RULER's S-NIAH-1/2/3, as in the second paper's Table 2).

- ``s-niah-1`` pass-key: a 7-digit number hidden in repeated noise sentences ("The grass is green. ...").
- ``s-niah-2``: a 7-digit number hidden in real prose (held-out documents).
- ``s-niah-3``: a UUID hidden in real prose.

A sample of context length L is exactly L prompt tokens: the RULER-style instruction, the haystack with the needle
sentence " One of the special magic numbers for {key} is: {value}." inserted at a sentence boundary near the requested
depth (0 = first haystack token, 1 = last), and the question, which ends with the answer prefix "... is". The prompt is
built from separately tokenized pieces, so the needle's token span is known exactly (``needle_start``).

Scoring is exact match: the first whitespace-separated word of the greedy continuation, stripped of trailing
punctuation, must equal the value.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tttlm.eval.generate import generate_tokens

TASKS = {"s-niah-1": ("noise", "number"), "s-niah-2": ("prose", "number"), "s-niah-3": ("prose", "uuid")}
NOISE = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
_ADJECTIVES = [
    "abundant",
    "brave",
    "calm",
    "delightful",
    "eager",
    "faithful",
    "gentle",
    "happy",
    "icy",
    "jolly",
    "kind",
    "lively",
    "merry",
    "nimble",
]
_NOUNS = [
    "apple",
    "bridge",
    "candle",
    "desert",
    "engine",
    "forest",
    "garden",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lantern",
    "meadow",
    "needle",
]
SNAP_TOKENS = 64  # how far from the requested depth the needle may move to sit at a sentence boundary


@dataclass
class NiahSample:
    """One prompt. ``ids``: (L,) token ids; the needle occupies ``ids[needle_start : needle_start + needle_len]``."""

    task: str
    length: int
    depth: float
    key: str
    answer: str
    ids: list[int]
    needle_start: int
    needle_len: int
    haystack_start: int
    haystack_len: int


def _value(rng: random.Random, kind: str) -> str:
    if kind == "number":
        return str(rng.randint(1_000_000, 9_999_999))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def prompt_texts(kind: str, key: str, value: str) -> tuple[str, str, str]:
    """(instruction, needle, question) texts; the question ends with the answer prefix."""
    noun = "number" if kind == "number" else "uuid"
    instruction = (
        f"A special magic {noun} is hidden within the following text. Make sure to memorize it. "
        f"I will quiz you about the {noun} afterwards.\n"
    )
    needle = f" One of the special magic {noun}s for {key} is: {value}."
    question = (
        f"\nWhat is the special magic {noun} for {key} mentioned in the provided text? "
        f"The special magic {noun} for {key} mentioned in the provided text is"
    )
    return instruction, needle, question


class NiahTaskMaker:
    """Builds deterministic S-NIAH samples for one tokenizer.

    Args:
        prose_ids: (N,) token ids of held-out prose (documents back to back) for s-niah-2/3; may be empty when
            only s-niah-1 is asked for.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prose_ids: np.ndarray | Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.prose = np.asarray(prose_ids, dtype=np.int64)
        # ids whose text ends a sentence or line: the needle goes right after one of them
        self.enders = {
            i for i in range(len(tokenizer)) if tokenizer.decode([i]).rstrip(" ").endswith((".", "!", "?", "\n"))
        }

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _haystack(self, kind: str, size: int, rng: random.Random) -> np.ndarray:
        if kind == "noise":
            unit = np.asarray(self.encode(NOISE), dtype=np.int64)
            return np.tile(unit, -(-size // unit.size))[:size]
        if self.prose.size == 0:
            raise ValueError("the prose tasks (s-niah-2, s-niah-3) need held-out documents; none were given")
        start = rng.randrange(self.prose.size)
        reps = -(-(start + size) // self.prose.size)  # wrap around a short corpus
        return np.tile(self.prose, reps)[start : start + size]

    def _insertion(self, haystack: np.ndarray, target: int) -> int:
        boundaries = [0, haystack.size] + [i + 1 for i, t in enumerate(haystack.tolist()) if t in self.enders]
        best = min(boundaries, key=lambda b: (abs(b - target), b))
        return best if abs(best - target) <= SNAP_TOKENS else target

    def sample(self, task: str, length: int, depth: float, seed: int = 0) -> NiahSample:
        """The sample of ``task`` with ``length`` prompt tokens and the needle at ``depth`` in [0, 1]."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        if not 0 <= depth <= 1:
            raise ValueError(f"depth must be in [0, 1]; got {depth}")
        haystack_kind, value_kind = TASKS[task]
        rng = random.Random(f"{seed}/{task}/{length}/{depth:.6f}")
        key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        value = _value(rng, value_kind)
        instruction, needle, question = (self.encode(t) for t in prompt_texts(value_kind, key, value))
        size = length - len(instruction) - len(needle) - len(question)
        if size < 1:
            raise ValueError(f"context length {length} is too short for {task}: the prompt alone needs {length - size}")
        haystack = self._haystack(haystack_kind, size, rng)
        at = self._insertion(haystack, round(depth * size))
        ids = [*instruction, *haystack[:at].tolist(), *needle, *haystack[at:].tolist(), *question]
        return NiahSample(
            task, length, depth, key, value, ids, len(instruction) + at, len(needle), len(instruction), size
        )


def score_answer(generated: str, answer: str) -> bool:
    """Exact match of the continuation's first word (trailing punctuation stripped) with the answer."""
    words = generated.split()
    return bool(words) and words[0].rstrip(".,;:!?\"'") == answer


def depths_for(count: int) -> list[float]:
    """``count`` needle depths spread evenly over [0, 1] (both ends included when count > 1)."""
    return [0.5] if count == 1 else [i / (count - 1) for i in range(count)]


@torch.no_grad()
def evaluate_niah(
    model: torch.nn.Module,
    maker: NiahTaskMaker,
    tasks: Sequence[str],
    lengths: Sequence[int],
    depths: Sequence[float],
    *,
    samples: int = 1,
    seed: int = 0,
    chunk_size: int = 2048,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """One record per (task, length, depth, sample): the answer, the prediction (first word) and ``correct``."""
    stop = [i for i in (maker.tokenizer.eos_token_id,) if i is not None]
    records = []
    for task in tasks:
        for length in lengths:
            for depth in depths:
                for k in range(samples):
                    s = maker.sample(task, length, depth, seed=seed + k)
                    budget = len(maker.encode(f" {s.answer}.")) + 4
                    new = generate_tokens(model, s.ids, budget, chunk_size=chunk_size, stop_ids=stop)
                    text = maker.tokenizer.decode(new)
                    words = text.split()
                    records.append(
                        {
                            "task": task,
                            "length": length,
                            "depth": depth,
                            "sample": k,
                            "answer": s.answer,
                            "prediction": words[0] if words else "",
                            "correct": score_answer(text, s.answer),
                        }
                    )
                    if progress:
                        progress(f"{task} L={length} depth={depth:.2f}: {'ok' if records[-1]['correct'] else 'miss'}")
    return records


def accuracy_table(records: Sequence[dict]) -> dict[str, dict[int, float]]:
    """task -> length -> accuracy (fraction correct over depths and samples)."""
    table: dict[str, dict[int, list[bool]]] = {}
    for r in records:
        table.setdefault(r["task"], {}).setdefault(r["length"], []).append(r["correct"])
    return {t: {n: float(np.mean(v)) for n, v in by_len.items()} for t, by_len in table.items()}


def depth_grid(records: Sequence[dict], task: str) -> tuple[list[float], list[int], np.ndarray]:
    """(depths, lengths, (depths, lengths) accuracy) of one task, for the heatmap."""
    rows = [r for r in records if r["task"] == task]
    depths = sorted({r["depth"] for r in rows})
    lengths = sorted({r["length"] for r in rows})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for i, d in enumerate(depths):
        for j, n in enumerate(lengths):
            hits = [r["correct"] for r in rows if r["depth"] == d and r["length"] == n]
            if hits:
                grid[i, j] = np.mean(hits)
    return depths, lengths, grid
