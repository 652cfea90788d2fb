"""S-NIAH task generators (deterministic, needle at the requested depth), exact scoring, and an oracle's score."""

from __future__ import annotations

import re

import numpy as np
import pytest
from eval_testing import CopyOracle

from tttlm.data.packing import PackedDataset
from tttlm.data.tokenizer import load_tokenizer
from tttlm.eval.niah import (
    NOISE,
    SNAP_TOKENS,
    TASKS,
    NiahTaskMaker,
    accuracy_table,
    depth_grid,
    depths_for,
    evaluate_niah,
    score_answer,
)
from tttlm.eval.perplexity import long_documents


@pytest.fixture(scope="module")
def maker(data_dir) -> NiahTaskMaker:
    docs = long_documents(PackedDataset(data_dir, "val"), 1)
    return NiahTaskMaker(load_tokenizer(data_dir / "tokenizer"), np.concatenate([d for _, d in docs]))


@pytest.mark.parametrize("task", list(TASKS))
def test_generator_is_deterministic(maker, task) -> None:
    a, b = maker.sample(task, 400, 0.5, seed=3), maker.sample(task, 400, 0.5, seed=3)
    assert a == b
    other = maker.sample(task, 400, 0.5, seed=4)
    assert (other.key, other.answer) != (a.key, a.answer)


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_needle_sits_at_the_requested_depth(maker, task, depth) -> None:
    s = maker.sample(task, 600, depth, seed=1)
    assert len(s.ids) == 600  # the prompt is exactly the context length
    needle = maker.tokenizer.decode(s.ids[s.needle_start : s.needle_start + s.needle_len])
    assert (
        needle == f" One of the special magic {'uuid' if task == 's-niah-3' else 'number'}s for {s.key} is: {s.answer}."
    )
    offset = s.needle_start - s.haystack_start
    assert abs(offset - depth * s.haystack_len) <= SNAP_TOKENS
    if task == "s-niah-1":  # noise: boundaries every repetition of the noise sentences, so much closer
        assert abs(offset - depth * s.haystack_len) <= len(maker.encode(NOISE)) / 2 + 1
    text = maker.tokenizer.decode(s.ids)
    assert text.startswith("A special magic")
    assert text.endswith(
        f"The special magic {'uuid' if task == 's-niah-3' else 'number'} for {s.key} mentioned in the provided text is"
    )
    assert text.count(s.answer) == 1  # only in the needle


def test_values_and_haystacks(maker) -> None:
    one, two, three = (maker.sample(t, 500, 0.5, seed=0) for t in TASKS)
    assert re.fullmatch(r"\d{7}", one.answer)
    assert re.fullmatch(r"\d{7}", two.answer)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", three.answer)
    assert "The grass is green. The sky is blue." in maker.tokenizer.decode(one.ids)
    assert "The grass is green" not in maker.tokenizer.decode(two.ids)


def test_bad_requests(maker, data_dir) -> None:
    with pytest.raises(ValueError, match="too short"):
        maker.sample("s-niah-1", 40, 0.5)
    with pytest.raises(ValueError, match="depth"):
        maker.sample("s-niah-1", 400, 1.5)
    with pytest.raises(ValueError, match="unknown task"):
        maker.sample("s-niah-9", 400, 0.5)
    with pytest.raises(ValueError, match="held-out documents"):
        NiahTaskMaker(maker.tokenizer).sample("s-niah-2", 400, 0.5)


def test_scoring_is_exact() -> None:
    assert score_answer(" 1234567.", "1234567")
    assert score_answer("1234567\nmore text", "1234567")
    assert not score_answer(" 12345678.", "1234567")
    assert not score_answer(" 123456", "1234567")
    assert not score_answer("", "1234567")
    assert not score_answer(" the 1234567", "1234567")


@pytest.mark.parametrize(("wrong", "expected"), [(False, 1.0), (True, 0.0)])
def test_a_model_that_reads_the_needle_scores_perfectly(maker, wrong, expected) -> None:
    oracle = CopyOracle(maker.tokenizer, wrong=wrong)
    depths = depths_for(3)
    records = evaluate_niah(oracle, maker, list(TASKS), [600, 900], depths, samples=2, chunk_size=128)
    assert len(records) == 3 * 2 * 3 * 2
    assert all(r["correct"] == (not wrong) for r in records)
    assert all(r["prediction"].rstrip(".") == r["answer"] for r in records) != wrong
    table = accuracy_table(records)
    assert table == {t: {600: expected, 900: expected} for t in TASKS}
    got_depths, lengths, grid = depth_grid(records, "s-niah-3")
    assert got_depths == depths
    assert lengths == [600, 900]
    assert np.all(grid == expected)


def test_depths_for() -> None:
    assert depths_for(1) == [0.5]
    assert depths_for(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
