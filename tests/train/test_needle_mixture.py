"""Needle documents in the training stream (data.needle_mixture, tttlm.data.needles): the key space held apart from
the evaluation's, train-split essays, the rate, the targets, determinism, exact resume, and the refusals."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from train_testing import tiny_config

from tttlm.data.needles import NeedleMixture
from tttlm.data.packing import PackedDataset
from tttlm.data.tokenizer import load_tokenizer
from tttlm.eval.niah import TASKS, NiahTaskMaker, key_space, key_words, part_of
from tttlm.eval.perplexity import long_documents
from tttlm.train import ConfigError, read_metrics, train
from tttlm.train.loop import load_data

SEQ_LEN = 512  # the test tokenizer has 300 ids: a needle prompt needs about 380 of them
NEEDLE = re.compile(r"One of the special magic (?:number|uuid)s for (.+?) is: ([0-9a-f-]+)\.")


def _words(key: str) -> tuple[str, str]:
    """(adjective, noun) of a key: words may hold hyphens and spaces themselves ("old-fashioned", "dump truck")."""
    adjectives, nouns = map(set, key_words())
    splits = [(key[:i], key[i + 1 :]) for i, c in enumerate(key) if c == "-"]
    (words,) = [(a, n) for a, n in splits if a in adjectives and n in nouns]
    return words


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return load_tokenizer(data_dir / "tokenizer")


@pytest.fixture(scope="module")
def essay(data_dir) -> np.ndarray:
    return np.concatenate([d for _, d in long_documents(PackedDataset(data_dir, "train"), 1)])


def _mixture(tokenizer, essay, **changes) -> NeedleMixture:
    settings = {"rate": 0.5, "tasks": list(TASKS), "seq_len": SEQ_LEN, "seed": 0, "pad_id": tokenizer.eos_token_id}
    return NeedleMixture(tokenizer, essay, **{**settings, **changes})


def _needles(mixture: NeedleMixture, count: int) -> list[int]:
    return [g for g in range(10 * count) if mixture.is_needle(g)][:count]


def test_the_key_space_is_split_in_two_disjoint_halves() -> None:
    adjectives, nouns = key_words()
    (eval_adj, eval_nouns), (train_adj, train_nouns) = key_space("eval"), key_space("train")
    assert set(eval_adj).isdisjoint(train_adj)
    assert set(eval_nouns).isdisjoint(train_nouns)
    assert sorted(eval_adj + train_adj) == sorted(adjectives)
    assert sorted(eval_nouns + train_nouns) == sorted(nouns)
    assert 0.4 < len(train_adj) / len(adjectives) < 0.6
    assert 0.4 < len(train_nouns) / len(nouns) < 0.6
    values = [str(v) for v in range(1_000_000, 1_002_000)]
    assert 0.45 < np.mean([part_of(v) == "train" for v in values]) < 0.55
    with pytest.raises(ValueError, match="part must be"):
        key_space("test")


def test_no_evaluation_key_word_or_value_is_in_a_training_needle(tokenizer, essay) -> None:
    maker = NiahTaskMaker(tokenizer, essay)  # the evaluation's generator, as tttlm eval niah builds it
    evaluation = [maker.sample(t, 600, seed=s, index=k) for t in TASKS for s in range(2) for k in range(40)]
    eval_words = {w for s in evaluation for w in _words(s.key)}
    eval_values = {s.answer for s in evaluation}
    assert all(part_of(w) == "eval" for w in eval_words)
    assert all(part_of(v) == "eval" for v in eval_values)
    mixture = _mixture(tokenizer, essay)
    trained_words, trained_values = set(), set()
    for g in _needles(mixture, 120):
        ids, _ = mixture.document(g)
        key, value = NEEDLE.search(tokenizer.decode(ids)).groups()
        trained_words.update(_words(key))
        trained_values.add(value)
    assert all(part_of(w) == "train" for w in trained_words)
    assert all(part_of(v) == "train" for v in trained_values)
    assert eval_words.isdisjoint(trained_words)
    assert eval_values.isdisjoint(trained_values)


def test_essay_haystacks_are_passages_of_the_train_split(tokenizer, essay, data_dir) -> None:
    mixture = _mixture(tokenizer, essay, tasks=["s-niah-2"])
    test_text = tokenizer.decode(np.concatenate([d for _, d in long_documents(PackedDataset(data_dir, "test"), 1)]))
    train_text = tokenizer.decode(essay)
    starts = set()
    for g in _needles(mixture, 8):
        s = mixture.maker.sample("s-niah-2", SEQ_LEN, seed=0, index=g, reserve=None)
        before = tokenizer.decode(s.ids[s.haystack_start : s.needle_start]).strip()
        after = tokenizer.decode(s.ids[s.needle_start + s.needle_len : s.haystack_start + s.haystack_len + 2])
        for passage in (before, after.strip()):
            if len(passage) > 40:
                assert passage[5:-5] in train_text
                assert passage[5:-5] not in test_text
        starts.add(before[:40])
    assert len(starts) > 4  # each haystack from its own random place (the evaluation's: always the first tokens)


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.6])
def test_the_fraction_of_needle_sequences_is_the_rate(tokenizer, essay, rate) -> None:
    mixture = _mixture(tokenizer, essay, rate=rate)
    fraction = np.mean([mixture.is_needle(g) for g in range(4000)])
    assert abs(fraction - rate) < 0.03  # 4.4 standard deviations at rate 0.25
    tasks = [mixture._draw(g)[1] for g in range(4000) if mixture.is_needle(g)]
    for task in TASKS if rate else ():
        assert abs(tasks.count(task) / len(tasks) - 1 / 3) < 0.05


def test_a_needle_document_is_the_prompt_then_the_answer_which_is_the_target(tokenizer, essay) -> None:
    mixture = _mixture(tokenizer, essay)
    for g in _needles(mixture, 12):
        ids, labels = mixture.document(g)
        assert ids.shape == labels.shape == (SEQ_LEN,)
        key, value = NEEDLE.search(tokenizer.decode(ids)).groups()
        answer = tokenizer(" " + value, add_special_tokens=False)["input_ids"]
        trained = np.flatnonzero(labels != -100)
        assert trained.tolist() == list(range(SEQ_LEN - len(answer), SEQ_LEN))  # the last tokens only
        assert labels[trained].tolist() == ids[trained].tolist() == answer
        first = int(np.flatnonzero(ids != tokenizer.eos_token_id)[0])  # end-of-text padding before the prompt
        prompt = tokenizer.decode(ids[first : SEQ_LEN - len(answer)])
        kind = "uuid" if "uuid" in prompt else "number"
        assert prompt.startswith(f"A special magic {kind} is hidden within the following text.")
        assert prompt.endswith(f"The special magic {kind} for {key} mentioned in the provided text is")


def test_targets_all_trains_every_token_but_the_padding(tokenizer, essay) -> None:
    mixture = _mixture(tokenizer, essay, targets="all", tasks=["s-niah-1"])
    g = _needles(mixture, 1)[0]
    ids, labels = mixture.document(g)
    first = int(np.flatnonzero(ids != tokenizer.eos_token_id)[0])
    assert (labels[:first] == -100).all()
    assert (labels[first:] == ids[first:]).all()


def test_the_stream_is_a_function_of_the_seed_and_the_sample(tokenizer, essay) -> None:
    a, b, other = _mixture(tokenizer, essay), _mixture(tokenizer, essay), _mixture(tokenizer, essay, seed=1)
    assert [a.is_needle(g) for g in range(200)] == [b.is_needle(g) for g in range(200)]
    assert [a.is_needle(g) for g in range(200)] != [other.is_needle(g) for g in range(200)]
    g = _needles(a, 1)[0]
    assert all(np.array_equal(x, y) for x, y in zip(a.document(g), b.document(g), strict=True))
    # any order of reading gives the same rows (nothing is stateful): a batch, then the same samples one by one
    ids = torch.zeros(6, SEQ_LEN, dtype=torch.long)
    mixed, labels = a.mix(range(10, 16), ids, ids)
    for row, sample in enumerate(range(10, 16)):
        one, one_labels = b.mix(range(sample, sample + 1), ids[:1], ids[:1])
        assert torch.equal(mixed[row], one[0])
        assert torch.equal(labels[row], one_labels[0])
        assert bool(mixed[row].any()) == a.is_needle(sample)  # corpus rows (zeros here) pass through
    assert torch.equal(ids, torch.zeros_like(ids))  # the inputs are left as they are


def _needle_config(run_dir, data_dir, **changes):
    settings = {
        "data.seq_len": SEQ_LEN,
        "data.needle_mixture": "{rate: 0.5, tasks: [s-niah-1, s-niah-2]}",
        "train.steps": 4,
        "train.batch_tokens": 2 * SEQ_LEN,
        "train.micro_batch_size": 1,
        "optim.warmup_steps": 1,
        "eval.every": 2,
        "eval.tokens": SEQ_LEN,
    }
    return tiny_config(run_dir, data_dir, **{**settings, **changes})


def _curve(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run_dir)]


def test_the_trainer_writes_its_needles_over_the_train_split(data_dir, tmp_path, essay) -> None:
    needles = load_data(_needle_config(tmp_path / "run", data_dir), print).needles
    assert np.array_equal(needles.maker.essay, essay)  # the evaluation's essays: the test split
    assert (needles.rate, needles.tasks, needles.seq_len, needles.targets) == (
        0.5,
        ("s-niah-1", "s-niah-2"),
        SEQ_LEN,
        "answer",
    )


def test_a_resumed_run_continues_the_same_mixed_stream(data_dir, tmp_path) -> None:
    full = tmp_path / "full"
    train(_needle_config(full, data_dir))
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000004")
    shutil.rmtree(resumed / "model")
    train(_needle_config(resumed, data_dir), resume=True)
    assert _curve(resumed) == _curve(full)  # bitwise, steps 3 and 4 recomputed
    control = tmp_path / "control"
    train(_needle_config(control, data_dir, **{"data.needle_mixture.rate": 0}))
    losses = [[r["loss"] for r in _curve(run) if r["kind"] == "train"] for run in (full, control)]
    assert losses[0] != losses[1]  # the needles are in the stream
    with pytest.raises(ConfigError, match=r"another trajectory|differ"):
        train(_needle_config(full, data_dir, **{"data.needle_mixture.rate": 0.25}), resume=True)


@pytest.mark.parametrize(
    ("mixture", "message"),
    [
        ("{rate: 1.0}", r"rate must be in \[0, 1\)"),
        ("{rate: -0.1}", r"rate must be in \[0, 1\)"),
        ("{tasks: [s-niah-9]}", "unknown task.*s-niah-9"),
        ("{tasks: []}", "at least one"),
        ("{tasks: [s-niah-1, s-niah-1]}", "more than once"),
        ("{targets: prompt}", "targets must be answer"),
        ("{ratio: 0.5}", "unknown key.*data.needle_mixture.ratio"),
    ],
)
def test_bad_mixtures_are_refused_at_the_config(data_dir, tmp_path, mixture, message) -> None:
    with pytest.raises(ConfigError, match=f"data.needle_mixture.*{message}|{message}"):
        _needle_config(tmp_path / "run", data_dir, **{"data.needle_mixture": mixture})


def test_a_training_length_too_short_for_a_needle_is_refused(data_dir, tmp_path) -> None:
    config = _needle_config(tmp_path / "run", data_dir, **{"data.seq_len": 256, "train.batch_tokens": 512})
    with pytest.raises(ConfigError, match=r"data.needle_mixture: context length 256 is too short.*data.seq_len"):
        train(config)
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_data_without_its_tokenizer_is_refused(data_dir, tmp_path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shutil.rmtree(copy / "tokenizer")
    with pytest.raises(ConfigError, match=r"needle_mixture .*tokenizer.*does not exist"):
        train(_needle_config(tmp_path / "run", copy))
