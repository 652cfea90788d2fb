"""Single-needle-in-a-haystack tasks as RULER defines them (S-NIAH-1/2/3, the second paper's Table 2).

- ``s-niah-1``: a 7-digit number in the noise haystack: RULER's repeated noise ("The grass is green. ... There
  and back again."), one copy per line, the needle as a line of its own at a random line.
- ``s-niah-2``: a 7-digit number in an essay haystack: long held-out prose (``tttlm eval niah`` takes the test
  split's documents, which no model trains or validates on), the needle between two sentences at a depth drawn
  from RULER's 40-point grid 0 ... 100 %.
- ``s-niah-3``: a UUID in the essay haystack.

The key is RULER's: an adjective-noun pair from the wonderwords word lists (912 adjectives × 6,782 nouns, the lists
RULER draws from; installed with the package, nothing is fetched). Keys and values are split in two parts held apart
(``part_of``: the parity of a sha256 of the word or value): the evaluation draws both words of a key, and its value,
from the "eval" part (445 × 3,418 keys; RULER draws from the whole lists), the training needles of
``tttlm.data.needles`` from the "train" part, so no evaluation key word or value is ever trained on.

The prompt is RULER's single-needle template: "A special magic number is hidden within the following text. ...
afterwards.\\n{context}\\nWhat is the special magic number for {key} mentioned in the provided text? The special magic
number for {key} mentioned in the provided text is"; the needle "One of the special magic numbers for {key} is:
{value}.".

A sample of context length L has at most L − 128 prompt tokens: RULER's lengths count the 128 generated tokens. The
prompt is built from separately tokenized pieces, so the needle's token span is known exactly (``needle_start``).
RULER sizes its haystack by a search over whole sentences (noise) or words (essay); ours takes as many noise lines,
or essay tokens, as fit. Sentence boundaries of the essay are tokens that end with ".", "!", "?" or a newline
(RULER: nltk's sentence splitter, which needs a data download).

Scoring is RULER's ``string_match_all`` (``ruler_match``): the fraction of the references found, case-insensitively,
anywhere in the 128 generated tokens. Accuracy per (task, length) is the mean over samples, with a 95% Wilson
interval.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tttlm.eval.generate import generate_tokens

TASKS = {"s-niah-1": ("noise", "number"), "s-niah-2": ("essay", "number"), "s-niah-3": ("essay", "uuid")}
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
GENERATE = 128  # RULER's tokens_to_generate for the niah tasks; the context length includes them
ESSAY_DEPTHS = tuple(int(d) for d in np.round(np.linspace(0, 100, num=40)))  # RULER's depth grid, in percent
_Z975 = 1.959963984540054
PARTS = ("eval", "train")  # the two halves of the key and value space (part_of)


@lru_cache(maxsize=1)
def key_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adjectives, nouns) of the wonderwords package, RULER's source of needle keys."""
    assets = resources.files("wonderwords.assets")

    def read(name: str) -> tuple[str, ...]:
        return tuple(w.strip() for w in (assets / name).read_text().splitlines() if w.strip())

    return read("adjectivelist.txt"), read("nounlist.txt")


def part_of(text: str) -> str:
    """The part of the key space a key word or a value belongs to: "eval" or "train", by the parity of the first byte
    of sha256("tttlm-niah:" + text). About half of each list falls in each part, with no pattern in the words or
    digits that a model trained on one part could pick up (a rule by letter or last digit would bias its guesses)."""
    return PARTS[hashlib.sha256(f"tttlm-niah:{text}".encode()).digest()[0] & 1]


@lru_cache(maxsize=2)
def key_space(part: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adjectives, nouns) of ``key_words`` in ``part`` ("eval" or "train")."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part!r}")
    adjectives, nouns = key_words()
    return tuple(w for w in adjectives if part_of(w) == part), tuple(w for w in nouns if part_of(w) == part)


def ruler_match(prediction: str, references: Sequence[str]) -> float:
    """RULER's ``string_match_all`` for one sample: the fraction of ``references`` that occur in ``prediction``,
    case-insensitively, as substrings anywhere (RULER reports the mean over samples × 100)."""
    if isinstance(references, str) or not references:
        raise ValueError(f"references must be a non-empty list of strings; got {references!r}")
    text = prediction.lower()
    return sum(r.lower() in text for r in references) / len(references)


def wilson_interval(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n`` (n >= 1)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs n >= 1 and 0 <= successes <= n; got {successes} of {n}")
    p, z2 = successes / n, _Z975**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # the ends are exactly 0 and 1 at 0 and n successes (rounding would leave them a hair off)
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


@dataclass
class NiahSample:
    """One prompt. ``ids``: (≤ length − reserve,) token ids, reserve = 128 generated tokens by default; the needle is
    ``ids[needle_start : needle_start + needle_len]``; ``depth`` in [0, 1] is where it sits in the haystack;
    ``answer_ids``: the answer as the prompt's continuation (" " + answer, tokenized on its own)."""

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
    answer_ids: list[int]


def _value(rng: random.Random, kind: str, part: str) -> str:
    while True:  # about two draws: half of the values are in each part
        if kind == "number":
            value = str(rng.randint(1_000_000, 9_999_999))
        else:
            value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if part_of(value) == part:
            return value


def prompt_texts(kind: str, key: str, value: str) -> tuple[str, str, str]:
    """(instruction, needle, question) texts of RULER's single-needle template; the question ends with the answer
    prefix."""
    instruction = (
        f"A special magic {kind} is hidden within the following text. Make sure to memorize it. "
        f"I will quiz you about the {kind} afterwards."
    )
    needle = f"One of the special magic {kind}s for {key} is: {value}."
    question = (
        f"What is the special magic {kind} for {key} mentioned in the provided text? "
        f"The special magic {kind} for {key} mentioned in the provided text is"
    )
    return instruction, needle, question


class NiahTaskMaker:
    """Builds deterministic S-NIAH samples for one tokenizer.

    Args:
        essay_ids: (N,) token ids of prose (documents back to back) for s-niah-2/3: held-out documents for the
            evaluation, train documents for training needles; may be empty when only s-niah-1 is asked for.
        part: the part of the key space (``part_of``) keys and values come from: "eval" for the evaluation, "train"
            for training needles.
        essay_start: "first": every essay haystack is the essay from its first token (RULER: the concatenated
            essays, cut to length); "random": each starts at a random token of it (training needles: many passages).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        essay_ids: np.ndarray | Sequence[int] = (),
        *,
        part: str = "eval",
        essay_start: str = "first",
    ) -> None:
        if essay_start not in ("first", "random"):
            raise ValueError(f"essay_start must be first or random; got {essay_start!r}")
        key_space(part)  # checks the part's name
        self.tokenizer = tokenizer
        self.essay = np.asarray(essay_ids, dtype=np.int64)
        self.part, self.essay_start = part, essay_start
        # ids whose text ends a sentence or line: an essay needle goes right after one of them
        self.enders = {
            i for i in range(len(tokenizer)) if tokenizer.decode([i]).rstrip(" ").endswith((".", "!", "?", "\n"))
        }

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _noise(self, budget: int, needle: list[int], rng: random.Random, depth: float | None) -> tuple[list, int]:
        line = self.encode("\n" + NOISE)
        lines = budget // len(line)
        at = rng.randrange(lines) if depth is None else min(int(lines * depth), lines)  # RULER: a random line
        return [*line * at, *needle, *line * (lines - at)], at * len(line)

    def _essay(self, budget: int, needle: list[int], rng: random.Random, depth: float | None) -> tuple[list, int]:
        if self.essay.size == 0:
            raise ValueError("the essay tasks (s-niah-2, s-niah-3) need held-out documents; none were given")
        first = 0 if self.essay_start == "first" else rng.randrange(self.essay.size)
        haystack = self.essay[(first + np.arange(budget)) % self.essay.size].tolist()  # RULER repeats a short essay
        starts = [0] + [i + 1 for i, t in enumerate(haystack[:-1]) if t in self.enders]
        fraction = rng.choice(ESSAY_DEPTHS) / 100 if depth is None else depth
        at = ([*starts, len(haystack)])[int(len(starts) * fraction)]
        return [*haystack[:at], *needle, *haystack[at:]], at

    def sample(
        self,
        task: str,
        length: int,
        *,
        seed: int = 0,
        index: int = 0,
        depth: float | None = None,
        reserve: int | None = GENERATE,
    ) -> NiahSample:
        """Sample ``index`` of ``task`` at context length ``length`` (prompt + ``reserve`` tokens: RULER's 128
        generated tokens, or None: the answer's own tokens, for a training sequence that ends with its answer); the
        needle at a random depth as RULER draws it, or at ``depth`` in [0, 1]."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        if depth is not None and not 0 <= depth <= 1:
            raise ValueError(f"depth must be in [0, 1]; got {depth}")
        haystack_kind, value_kind = TASKS[task]
        rng = random.Random(f"{seed}/{task}/{length}/{index}")
        adjectives, nouns = key_space(self.part)
        key = f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
        value = _value(rng, value_kind, self.part)
        instruction, needle, question = prompt_texts(value_kind, key, value)
        head, tail = self.encode(instruction), self.encode("\n" + question)
        needle_ids = self.encode(("\n" if haystack_kind == "noise" else " ") + needle)
        answer_ids = self.encode(" " + value)
        gap = [] if haystack_kind == "noise" else self.encode("\n")  # noise lines bring their own newline
        after = len(answer_ids) if reserve is None else reserve
        budget = length - after - len(head) - len(gap) - len(needle_ids) - len(tail)
        smallest = len(self.encode("\n" + NOISE)) if haystack_kind == "noise" else 1  # one line, or one token
        if budget < smallest:
            what = "its answer" if reserve is None else f"the {reserve} generated tokens"
            raise ValueError(
                f"context length {length} is too short for {task}: the prompt and {what} need at least "
                f"{length - budget + smallest}"
            )
        make = self._noise if haystack_kind == "noise" else self._essay
        context, at = make(budget, needle_ids, rng, depth)
        start = len(head) + len(gap)
        size = len(context) - len(needle_ids)
        return NiahSample(
            task=task,
            length=length,
            depth=at / size,
            key=key,
            answer=value,
            ids=[*head, *gap, *context, *tail],
            needle_start=start + at,
            needle_len=len(needle_ids),
            haystack_start=start,
            haystack_len=size,
            answer_ids=answer_ids,
        )


@torch.no_grad()
def evaluate_niah(
    model: torch.nn.Module,
    maker: NiahTaskMaker,
    tasks: Sequence[str],
    lengths: Sequence[int],
    *,
    samples: int = 20,
    seed: int = 0,
    depths: Sequence[float] | None = None,
    chunk_size: int = 2048,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """One record per (task, length, sample): depth, ``distance`` (tokens from the needle's first token to the end of
    the prompt: what a sliding window must span to see the whole needle when the answer starts), answer, the greedy
    continuation (``GENERATE`` tokens or up to end-of-text), its ``score`` (``ruler_match``) and ``correct`` (score
    1). ``depths``: None for random depths as RULER draws them, or fractions in [0, 1]: ``samples`` samples at each
    (the same keys and values at every depth: the k-th sample of each depth is the k-th random sample, moved)."""
    if depths is not None and not all(0 <= d <= 1 for d in depths):
        raise ValueError(f"depths must be fractions in [0, 1]; got {list(depths)}")
    stop = [i for i in (maker.tokenizer.eos_token_id,) if i is not None]
    records = []
    placements = (
        [(None, k) for k in range(samples)] if depths is None else [(d, k) for d in depths for k in range(samples)]
    )
    for task in tasks:
        for length in lengths:
            for depth, k in placements:
                s = maker.sample(task, length, seed=seed, index=k, depth=depth)
                new = generate_tokens(model, s.ids, GENERATE, chunk_size=chunk_size, stop_ids=stop)
                text = maker.tokenizer.decode(new)
                score = ruler_match(text, [s.answer])
                records.append(
                    {
                        "task": task,
                        "length": length,
                        "depth": s.depth,
                        "distance": len(s.ids) - s.needle_start,
                        "sample": k,
                        "answer": s.answer,
                        "prediction": text,
                        "score": score,
                        "correct": score == 1.0,
                    }
                )
                if progress:
                    progress(f"{task} L={length} #{k} depth={s.depth:.2f}: {'ok' if score == 1 else 'miss'}")
    return records


def _by_cell_records(records: Sequence[dict]) -> dict[str, dict[int, list[dict]]]:
    table: dict[str, dict[int, list[dict]]] = {}
    for r in records:
        table.setdefault(r["task"], {}).setdefault(r["length"], []).append(r)
    return table


def _by_cell(records: Sequence[dict]) -> dict[str, dict[int, list[float]]]:
    cells = _by_cell_records(records)
    return {t: {n: [r["score"] for r in rows] for n, rows in by_len.items()} for t, by_len in cells.items()}


def accuracy_table(records: Sequence[dict]) -> dict[str, dict[int, float]]:
    """task -> length -> accuracy (mean score over the samples)."""
    return {t: {n: float(np.mean(v)) for n, v in by_len.items()} for t, by_len in _by_cell(records).items()}


def interval_table(records: Sequence[dict]) -> dict[str, dict[int, dict[str, float]]]:
    """task -> length -> {"accuracy", "low", "high", "n"}: the mean score and its 95% Wilson interval."""
    return {t: {n: _wilson_cell(v) for n, v in by_len.items()} for t, by_len in _by_cell(records).items()}


def _wilson_cell(scores: Sequence[float]) -> dict[str, float]:
    """{"accuracy", "low", "high", "n"} of a non-empty list of scores."""
    low, high = wilson_interval(sum(scores), len(scores))
    return {"accuracy": float(np.mean(scores)), "low": low, "high": high, "n": len(scores)}


def distance_ranges(edges: Sequence[int]) -> list[tuple[int, int | None]]:
    """The (low, high] token ranges that ``edges`` split distances into (high None: unbounded); ``ValueError``
    unless the edges are positive, ascending and distinct."""
    bounds = [int(e) for e in edges]
    if not bounds or any(b <= 0 for b in bounds) or bounds != sorted(set(bounds)):
        raise ValueError(f"distance edges must be positive, ascending and distinct token counts; got {list(edges)}")
    return list(zip([0, *bounds], [*bounds, None], strict=True))


def distance_table(records: Sequence[dict], edges: Sequence[int]) -> dict[str, dict[int, list[dict]]]:
    """task -> length -> one cell per distance range, split at ``edges`` (ascending token counts, e.g. a sliding
    window and twice it): ``{"low_distance", "high_distance" (None: unbounded), "accuracy", "low", "high", "n"}``,
    a range holding the records with ``low_distance < distance <= high_distance``; accuracy None and no interval
    where a range has no sample."""
    ranges = distance_ranges(edges)
    table: dict[str, dict[int, list[dict]]] = {}
    for task, by_len in _by_cell_records(records).items():
        table[task] = {}
        for length, rows in by_len.items():
            cells = []
            for lo, hi in ranges:
                scores = [r["score"] for r in rows if lo < r["distance"] and (hi is None or r["distance"] <= hi)]
                cell = {"low_distance": lo, "high_distance": hi, "n": len(scores), "accuracy": None}
                cells.append({**cell, **_wilson_cell(scores)} if scores else cell)
            table[task][length] = cells
    return table


def depth_grid(records: Sequence[dict], task: str, bins: int = 5) -> tuple[list[float], list[int], np.ndarray]:
    """(depth bin centres, lengths, (bins, lengths) accuracy) of one task, for the heatmap: the random depths fall in
    ``bins`` equal bins over [0, 1] (NaN where a bin has no sample)."""
    rows = [r for r in records if r["task"] == task]
    lengths = sorted({r["length"] for r in rows})
    sums, counts = np.zeros((bins, len(lengths))), np.zeros((bins, len(lengths)))
    for r in rows:
        i = min(int(r["depth"] * bins), bins - 1)
        sums[i, lengths.index(r["length"])] += r["score"]
        counts[i, lengths.index(r["length"])] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(counts > 0, sums / counts, np.nan)
    return [(i + 0.5) / bins for i in range(bins)], lengths, grid
