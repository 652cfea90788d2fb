"""Synthetic needle documents mixed into the training stream, so that a small model learns retrieval.

A needle document is an S-NIAH prompt built by the evaluation's own generator (``tttlm.eval.niah.NiahTaskMaker``:
RULER's instruction, haystack, needle sentence, question and answer prefix) followed by its answer, as one sequence
of the training length. Its targets are the answer's tokens (``targets="answer"``; every other label -100), or every
token but the padding (``targets="all"``: the needle document read as a corpus document, so the key's copies in the
question are predicted too). What keeps the evaluation out of training:

- keys and values come from the "train" part of the key space (``tttlm.eval.niah.part_of``: a sha256 parity of each
  key word and value), the evaluation's from the "eval" part, so no evaluation key word or value is in a needle;
- essay haystacks (s-niah-2/3) are passages of the corpus's train split, each from a random token of it (the
  evaluation: the test split, from its start).

The mixture is a pure function of the global sample index g (``tttlm.train.batches``): sample g is a needle document
when a uniform number drawn from ``(seed, NEEDLE_STREAM, g)`` is below ``rate`` (its task then drawn from the same
generator, uniformly over ``tasks``), and its prompt is sample g of that task at the training length. Nothing is
stateful, so a resumed run, or one on another number of processes, reads the same stream.

A needle shorter than the training length (noise haystacks come in whole lines) is preceded by end-of-text tokens
(the document separator, not a target).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tttlm.eval.niah import TASKS, NiahTaskMaker

NEEDLE_STREAM = 0x6E656564  # "need": keeps the mixture's random numbers apart from the window order's (seed, epoch)
TARGETS = ("answer", "all")  # which tokens of a needle document are trained on
PROBES = 256  # samples per task rendered when the mixture is built, to refuse a training length too short for them


def check_mixture(rate: float, tasks: Sequence[str], targets: str) -> None:
    """Raise ValueError unless ``rate`` is in [0, 1), ``tasks`` are distinct S-NIAH tasks (at least one) and
    ``targets`` is one of ``TARGETS``."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be answer (the answer's tokens) or all (every token); got {targets!r}")
    if not 0 <= rate < 1:
        raise ValueError(
            f"rate must be in [0, 1) (the fraction of training sequences that are needle documents); got {rate}"
        )
    if not tasks:
        raise ValueError(f"tasks must name at least one of {', '.join(TASKS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(map(str, unknown))}; choose from {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks are listed more than once: {list(tasks)}")


class NeedleMixture:
    """Which training samples are needle documents, and their tokens and labels.

    Args:
        tokenizer: the tokenizer the training data was packed with.
        essay_ids: (N,) token ids of the train split's documents back to back (end-of-text dropped); may be empty
            when no task has an essay haystack.
        rate: the probability that a sample is a needle document, in [0, 1).
        tasks: S-NIAH tasks (``tttlm.eval.niah.TASKS``); s-niah-1 puts its needle in RULER's noise, s-niah-2/3 in
            the essay.
        targets: "answer" or "all" (``TARGETS``): the tokens that are trained on.
        seq_len: the training length; every needle document has exactly this many tokens.
        seed: the run's seed.
        pad_id: the token that fills a needle document up to ``seq_len`` at its start (the end-of-text id).

    Raises ValueError when a setting is invalid or ``seq_len`` is too short for a needle of some task.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        essay_ids: np.ndarray | Sequence[int],
        *,
        rate: float,
        tasks: Sequence[str],
        targets: str = "answer",
        seq_len: int,
        seed: int,
        pad_id: int,
    ) -> None:
        check_mixture(rate, tasks, targets)
        essay_tasks = [t for t in tasks if TASKS[t][0] == "essay"]
        if essay_tasks and len(essay_ids) == 0:
            raise ValueError(f"{', '.join(essay_tasks)} need essay haystacks, but the train split has no tokens")
        self.maker = NiahTaskMaker(tokenizer, essay_ids, part="train", essay_start="random")
        self.rate, self.tasks, self.targets = rate, tuple(tasks), targets
        self.seq_len, self.seed, self.pad_id = seq_len, seed, pad_id
        if rate > 0:
            for task in self.tasks:
                for index in range(PROBES):
                    self.maker.sample(task, seq_len, seed=seed, index=index, reserve=None)  # ValueError: too short

    def _draw(self, sample: int) -> tuple[bool, str]:
        u, v = np.random.default_rng([self.seed, NEEDLE_STREAM, sample]).random(2)
        return bool(u < self.rate), self.tasks[int(v * len(self.tasks))]

    def is_needle(self, sample: int) -> bool:
        """Whether global sample ``sample`` is a needle document."""
        return self._draw(sample)[0]

    def document(self, sample: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, labels) of sample ``sample`` as a needle document, both (seq_len,) int64: end-of-text padding, the
        prompt, the answer; labels are the ids at the trained positions (the answer's, or all but the padding) and
        -100 elsewhere (the model shifts them: the prompt's last token predicts the answer's first)."""
        task = self._draw(sample)[1]
        s = self.maker.sample(task, self.seq_len, seed=self.seed, index=sample, reserve=None)
        pad = self.seq_len - len(s.ids) - len(s.answer_ids)
        ids = np.asarray([self.pad_id] * pad + s.ids + s.answer_ids, dtype=np.int64)
        labels = np.full(self.seq_len, -100, dtype=np.int64)
        first = self.seq_len - len(s.answer_ids) if self.targets == "answer" else pad
        labels[first:] = ids[first:]
        return ids, labels

    def mix(self, samples: range, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The corpus batch ``ids``/``labels`` (len(samples), seq_len) of ``samples``, with the rows of needle samples
        replaced by their needle documents (new tensors; the inputs are left as they are)."""
        ids, labels = ids.clone(), labels.clone()
        for row, sample in enumerate(samples):
            if self.is_needle(sample):
                needle_ids, needle_labels = self.document(sample)
                ids[row], labels[row] = torch.from_numpy(needle_ids), torch.from_numpy(needle_labels)
        return ids, labels
