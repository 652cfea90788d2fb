"""Deterministic pseudo-English documents prepared into a data directory, for the trainer and evaluation tests."""

from __future__ import annotations

import random
from pathlib import Path

from tttlm.data import Document, prepare_data

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "that",
    "he",
    "shall",
    "unto",
    "for",
    "his",
    "a",
    "lord",
    "they",
    "be",
    "is",
    "him",
    "not",
    "them",
    "it",
    "with",
    "all",
    "thou",
    "thy",
    "was",
    "god",
    "which",
    "my",
    "me",
    "said",
    "but",
    "ye",
    "their",
    "have",
    "will",
    "thee",
    "from",
    "as",
    "are",
    "when",
    "this",
    "out",
    "were",
    "by",
    "you",
    "up",
    "there",
    "hath",
    "then",
    "people",
    "came",
]


def make_synthetic_data_dir(
    out: Path, documents: int, words: int, vocabulary: int, sentence_end: float, val_fraction: float
) -> Path:
    """A prepared data directory (corpus, 300-token BPE, packed tokens): ``documents`` texts of ``words`` words drawn
    from the first ``vocabulary`` of ``WORDS``, each followed by a full stop with probability ``sentence_end``."""
    docs = []
    for i in range(documents):
        rng = random.Random(i)
        text = " ".join(
            rng.choice(WORDS[:vocabulary]) + ("." if rng.random() < sentence_end else "") for _ in range(words)
        )
        docs.append(Document(id=f"syn/{i:02d}", text=text, source="syn"))
    prepare_data(out, documents=docs, vocab_size=300, val_fraction=val_fraction, test_fraction=0.1, progress=False)
    return out
