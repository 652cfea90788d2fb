"""Helpers for the evaluation tests: a small prepared data directory, tiny models, and stub models."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch
from synthetic_data import make_synthetic_data_dir
from torch import nn

from tttlm.models.hf_compat import cache_argument, pop_cache

# a TTT-Linear small enough that a forward call takes milliseconds
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def make_data_dir(out: Path, documents: int = 12, words: int = 500) -> Path:
    """A prepared data directory (corpus, 300-token BPE, packed tokens) of deterministic pseudo-English sentences."""
    return make_synthetic_data_dir(out, documents, words, vocabulary=25, sentence_end=0.15, val_fraction=0.3)


class CopyOracle(nn.Module):
    """A stand-in "model" that answers S-NIAH by reading its input: it keeps every id it was fed in its cache,
    decodes them, finds the question's key and the needle "... for {key} is: {value}." and emits the tokens of
    " {value}." one per call, then end-of-text. It sees only what the evaluator feeds it through the model contract.
    """

    def __init__(self, tokenizer, wrong: bool = False) -> None:
        super().__init__()
        self.tokenizer, self.wrong = tokenizer, wrong
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the evaluator a device
        self.vocab = len(tokenizer)

    def forward(self, input_ids, use_cache=True, **kwargs) -> SimpleNamespace:
        seen = (pop_cache(kwargs.pop("past_key_values", None), kwargs) or []) + input_ids[0].tolist()
        logits = torch.zeros(1, input_ids.shape[1], self.vocab)
        logits[0, -1, self._next(seen)] = 1.0
        return SimpleNamespace(logits=logits, **cache_argument(seen))

    def _next(self, seen: list[int]) -> int:
        text = self.tokenizer.decode(seen)
        question = re.search(r"magic \w+ for (\S+) mentioned in the provided text is(.*)$", text, re.S)
        eos = self.tokenizer.eos_token_id
        if question is None:
            return eos
        key, generated = question.group(1), question.group(2)
        needle = re.search(rf"for {re.escape(key)} is: (\S+)\.", text)
        target = " 0000000." if self.wrong or needle is None else f" {needle.group(1)}."
        if not target.startswith(generated) or len(generated) >= len(target):
            return eos
        return self.tokenizer(target[len(generated) :], add_special_tokens=False)["input_ids"][0]
