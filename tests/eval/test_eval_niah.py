"""S-NIAH as RULER defines it: the generators, RULER's string_match_all scorer, Wilson intervals, an oracle."""

from __future__ import annotations

import re

import numpy as np
import pytest
from eval_testing import CopyOracle

from tttlm.data.packing import PackedDataset
from tttlm.data.tokenizer import load_tokenizer
from tttlm.eval.niah import (
    ESSAY_DEPTHS,
    GENERATE,
    NOISE,
    TASKS,
    NiahTaskMaker,
    accuracy_table,
    depth_grid,
    distance_table,
    evaluate_niah,
    interval_table,
    key_space,
    key_words,
    ruler_match,
    wilson_interval,
)
from tttlm.eval.perplexity import long_documents


@pytest.fixture(scope="module")
def maker(data_dir) -> NiahTaskMaker:
    docs = long_documents(PackedDataset(data_dir, "test"), 1)
    return NiahTaskMaker(load_tokenizer(data_dir / "tokenizer"), np.concatenate([d for _, d in docs]))


def _kind(task: str) -> str:
    return "uuid" if task == "s-niah-3" else "number"


@pytest.mark.parametrize("task", list(TASKS))
def test_generator_is_deterministic(maker, task) -> None:
    a, b = maker.sample(task, 600, seed=3, index=2), maker.sample(task, 600, seed=3, index=2)
    assert a == b
    other = maker.sample(task, 600, seed=3, index=3)
    assert (other.key, other.answer) != (a.key, a.answer)


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_needle_sits_at_the_requested_depth_and_the_length_counts_the_generation(maker, task, depth) -> None:
    s = maker.sample(task, 800, seed=1, depth=depth)
    line = len(maker.encode("\n" + NOISE))
    if task == "s-niah-1":  # whole lines of noise: less than a line short of the budget
        assert 800 - GENERATE - line < len(s.ids) <= 800 - GENERATE
    else:
        assert len(s.ids) == 800 - GENERATE
    needle = maker.tokenizer.decode(s.ids[s.needle_start : s.needle_start + s.needle_len])
    assert needle.strip() == f"One of the special magic {_kind(task)}s for {s.key} is: {s.answer}."
    offset = s.needle_start - s.haystack_start
    assert abs(offset - depth * s.haystack_len) <= (line if task == "s-niah-1" else 80)
    text = maker.tokenizer.decode(s.ids)
    assert text.startswith(f"A special magic {_kind(task)} is hidden within the following text.")
    kind = _kind(task)
    question = f"What is the special magic {kind} for {s.key} mentioned in the provided text? "
    assert text.endswith(f"\n{question}The special magic {kind} for {s.key} mentioned in the provided text is")
    assert text.count(s.answer) == 1  # only in the needle


def test_noise_is_one_copy_per_line_with_the_needle_on_its_own_line(maker) -> None:
    s = maker.sample("s-niah-1", 700, seed=0, index=5)
    lines = maker.tokenizer.decode(s.ids).split("\n")
    needle = [i for i, text in enumerate(lines) if text.startswith("One of the special magic numbers")]
    assert len(needle) == 1
    haystack = lines[1:-1]
    assert all(text == NOISE for i, text in enumerate(haystack, start=1) if i != needle[0])
    budget = 700 - GENERATE - (len(s.ids) - s.haystack_len)
    assert len(haystack) - 1 == budget // len(maker.encode("\n" + NOISE))


def test_random_depths_cover_the_haystack(maker) -> None:
    noise = [maker.sample("s-niah-1", 2000, index=k).depth for k in range(40)]
    essay = [maker.sample("s-niah-2", 2000, index=k).depth for k in range(40)]
    for depths in (noise, essay):
        assert min(depths) < 0.25
        assert max(depths) > 0.75
        assert len(set(depths)) > 15
    assert (ESSAY_DEPTHS[0], ESSAY_DEPTHS[-1], len(ESSAY_DEPTHS)) == (0, 100, 40)


def test_keys_come_from_the_evaluation_half_of_the_large_word_lists(maker) -> None:
    adjectives, nouns = key_words()
    assert len(adjectives) > 800
    assert len(nouns) > 6000
    eval_adjectives, eval_nouns = key_space("eval")  # the training needles draw from the other half
    keys = {maker.sample("s-niah-1", 1000, index=k).key for k in range(50)}
    assert len(keys) == 50
    for key in keys:  # words may hold a hyphen themselves ("old-fashioned")
        splits = [(key[:i], key[i + 1 :]) for i, c in enumerate(key) if c == "-"]
        assert any(a in eval_adjectives and n in eval_nouns for a, n in splits)


def test_values_and_haystacks(maker) -> None:
    one, two, three = (maker.sample(t, 600, seed=0) for t in TASKS)
    assert re.fullmatch(r"\d{7}", one.answer)
    assert re.fullmatch(r"\d{7}", two.answer)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", three.answer)
    assert "The grass is green. The sky is blue." in maker.tokenizer.decode(one.ids)
    assert "The grass is green" not in maker.tokenizer.decode(two.ids)


def test_bad_requests(maker) -> None:
    with pytest.raises(ValueError, match="too short"):
        maker.sample("s-niah-1", 150)
    with pytest.raises(ValueError, match="too short"):
        maker.sample("s-niah-2", GENERATE + 10)
    with pytest.raises(ValueError, match="depth"):
        maker.sample("s-niah-1", 1000, depth=1.5)
    with pytest.raises(ValueError, match="unknown task"):
        maker.sample("s-niah-9", 1000)
    with pytest.raises(ValueError, match="held-out documents"):
        NiahTaskMaker(maker.tokenizer).sample("s-niah-2", 1000)


@pytest.mark.parametrize(
    ("prediction", "references", "score"),
    [
        (" 1234567.", ["1234567"], 1.0),  # RULER: a substring anywhere, so punctuation does not matter
        ("The special magic number is 1234567 and more text", ["1234567"], 1.0),
        (" the 1234567", ["1234567"], 1.0),
        (" 12345678", ["1234567"], 1.0),  # RULER's substring match counts this too
        (" 123456", ["1234567"], 0.0),
        ("", ["1234567"], 0.0),
        (" 0F7A2B1C-1234-4ABC-8DEF-0123456789AB", ["0f7a2b1c-1234-4abc-8def-0123456789ab"], 1.0),  # case-insensitive
        ("1111111 and 3333333", ["1111111", "2222222", "3333333", "4444444"], 0.5),  # string_match_all: the fraction
    ],
)
def test_ruler_match_scores_as_ruler_does(prediction, references, score) -> None:
    assert ruler_match(prediction, references) == score


def test_ruler_match_refuses_a_bare_string() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        ruler_match("1234567", "1234567")


def test_wilson_interval() -> None:
    low, high = wilson_interval(0, 20)
    assert low == 0.0
    assert high == pytest.approx(0.1611, abs=1e-4)
    low, high = wilson_interval(10, 20)
    assert low == pytest.approx(0.2993, abs=1e-4)
    assert high == pytest.approx(0.7007, abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError, match="proportion"):
        wilson_interval(3, 0)


@pytest.mark.parametrize(("wrong", "expected"), [(False, 1.0), (True, 0.0)])
def test_a_model_that_reads_the_needle_scores_perfectly(maker, wrong, expected) -> None:
    oracle = CopyOracle(maker.tokenizer, wrong=wrong)
    records = evaluate_niah(oracle, maker, list(TASKS), [600, 900], samples=3, chunk_size=128)
    assert len(records) == 3 * 2 * 3
    assert all(r["correct"] == (not wrong) for r in records)
    assert all(r["score"] == expected for r in records)
    assert accuracy_table(records) == {t: {600: expected, 900: expected} for t in TASKS}
    cell = interval_table(records)["s-niah-2"][900]
    assert cell["n"] == 3
    assert cell["accuracy"] == expected
    assert cell["low"] <= expected <= cell["high"]
    depths, lengths, grid = depth_grid(records, "s-niah-3", bins=2)
    assert depths == [0.25, 0.75]
    assert lengths == [600, 900]
    assert np.all(np.isnan(grid) | (grid == expected))


def test_records_give_the_needles_distance_from_the_end_of_the_prompt(maker) -> None:
    records = evaluate_niah(CopyOracle(maker.tokenizer), maker, ["s-niah-1"], [600], samples=3, chunk_size=128)
    for k, r in enumerate(records):
        s = maker.sample("s-niah-1", 600, index=k)
        assert r["distance"] == len(s.ids) - s.needle_start
        tail = maker.tokenizer.decode(s.ids[-r["distance"] :])  # the last `distance` tokens hold the whole needle
        assert tail.lstrip("\n").startswith(f"One of the special magic numbers for {s.key} is: {s.answer}.")


def test_distance_table_splits_at_the_edges() -> None:
    records = [
        {"task": "s-niah-1", "length": 512, "distance": d, "score": float(d <= 64)} for d in (10, 64, 65, 128, 129, 300)
    ]
    cells = distance_table(records, [64, 128])["s-niah-1"][512]
    spans = [(c["low_distance"], c["high_distance"], c["n"]) for c in cells]
    assert spans == [(0, 64, 2), (64, 128, 2), (128, None, 2)]
    assert [c["accuracy"] for c in cells] == [1.0, 0.0, 0.0]
    assert cells[0]["low"] == pytest.approx(wilson_interval(2, 2)[0])
    empty = distance_table(records, [64, 1000, 2000])["s-niah-1"][512]
    assert empty[2] == {"low_distance": 1000, "high_distance": 2000, "n": 0, "accuracy": None}
    for edges in ([], [128, 64], [0, 64], [64, 64]):
        with pytest.raises(ValueError, match="ascending"):
            distance_table(records, edges)


def test_fixed_depths_move_the_same_samples(maker) -> None:
    oracle = CopyOracle(maker.tokenizer)
    records = evaluate_niah(oracle, maker, ["s-niah-1"], [600], samples=2, depths=[0.0, 1.0], chunk_size=128)
    assert [r["sample"] for r in records] == [0, 1, 0, 1]
    assert [r["answer"] for r in records[:2]] == [r["answer"] for r in records[2:]]
    assert [r["depth"] for r in records] == [0.0, 0.0, 1.0, 1.0]
    assert all(a["distance"] > b["distance"] for a, b in zip(records[:2], records[2:], strict=True))
    assert all(r["correct"] for r in records)
    with pytest.raises(ValueError, match="fractions"):
        evaluate_niah(oracle, maker, ["s-niah-1"], [600], samples=1, depths=[1.5])
