"""MQAR as Zoology defines it (eval/mqar.py), its sweep summary (eval/mqar_sweep.py) and ``tttlm eval mqar``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tttlm.cli import main
from tttlm.eval.mqar import IGNORE, MqarTask, TrainSettings, answer_loss, evaluate, make_examples, state_bytes, train
from tttlm.eval.mqar_sweep import summarize
from tttlm.models.registry import build

TASK = MqarTask(vocab_size=128, seq_len=64, num_pairs=8)


def test_examples_follow_zoology_definition() -> None:
    data = make_examples(TASK, 200, seed=0)
    half, context = TASK.vocab_size // 2, 2 * TASK.num_pairs
    assert data.inputs.shape == data.labels.shape == data.distance.shape == (200, 64)
    for x, y, d in zip(data.inputs.tolist(), data.labels.tolist(), data.distance.tolist(), strict=True):
        keys, values = x[0:context:2], x[1:context:2]
        assert all(1 <= k < half for k in keys)
        assert len(set(keys)) == len(keys)
        assert all(half <= v < TASK.vocab_size for v in values)
        assert len(set(values)) == len(values)
        queries = [t for t in range(64) if y[t] != IGNORE]
        assert len(queries) == TASK.num_pairs
        assert min(queries) >= context
        assert all(q % 2 == 0 for q in queries)
        asked = [x[q] for q in queries]
        assert sorted(asked) == sorted(keys)  # each key queried exactly once
        for q in queries:
            i = keys.index(x[q])
            assert y[q] == values[i]
            assert d[q] == q - (2 * i + 1)
        assert all(d[t] == -1 for t in range(64) if y[t] == IGNORE)


def test_examples_are_seeded_and_the_gaps_follow_the_power_law() -> None:
    a, b = make_examples(TASK, 50, seed=3), make_examples(TASK, 50, seed=3)
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, make_examples(TASK, 50, seed=4).inputs)
    data = make_examples(MqarTask(128, 64, 2, power_a=0.01), 2000, seed=0)
    gaps = ((data.labels != IGNORE).nonzero()[:, 1] - 4) // 2
    counts = np.bincount(gaps.numpy(), minlength=30)
    assert counts[0] > 3 * counts[-1]  # short gaps likelier
    uniform = make_examples(MqarTask(128, 64, 2, power_a=1.0), 2000, seed=0)
    counts_u = np.bincount((((uniform.labels != IGNORE).nonzero()[:, 1] - 4) // 2).numpy(), minlength=30)
    assert counts_u[0] < 2 * counts_u[-1]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"seq_len": 63}, "even"),
        ({"num_pairs": 17}, "need seq_len >= 68"),
        ({"vocab_size": 60}, "too small"),
        ({"power_a": 0.0}, "power_a"),
        ({"num_pairs": 0}, "positive integer"),
    ],
)
def test_bad_tasks_are_refused(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        MqarTask(**{"vocab_size": 128, "seq_len": 64, "num_pairs": 8, **kwargs})


class Lookup(nn.Module):
    """Answers a query from the key-value pairs it can see: all of them, or the last ``window`` positions."""

    def __init__(self, task: MqarTask, window: int | None = None) -> None:
        super().__init__()
        self.task, self.window = task, window

    def forward(self, input_ids: Tensor) -> SimpleNamespace:
        n, t = input_ids.shape
        logits = torch.zeros(n, t, self.task.vocab_size)
        context = 2 * self.task.num_pairs
        for row in range(n):
            x = input_ids[row].tolist()
            pairs = {x[i]: (i + 1, x[i + 1]) for i in range(0, context, 2)}
            for q in range(context, t):
                if x[q] in pairs and (self.window is None or q - pairs[x[q]][0] < self.window):
                    logits[row, q, pairs[x[q]][1]] = 20.0
        return SimpleNamespace(logits=logits)


def test_accuracy_counts_the_answers_only_and_splits_by_distance() -> None:
    data = make_examples(TASK, 64, seed=0)
    full = evaluate(Lookup(TASK), data, window=12)
    assert full["accuracy"] == full["accuracy_within"] == full["accuracy_beyond"] == 1.0
    assert full["loss"] < 1e-3
    local = evaluate(Lookup(TASK, window=12), data, window=12)
    assert local["accuracy_within"] == 1.0
    assert local["accuracy_beyond"] == 0.0
    assert 0 < local["within_share"] < 1
    assert local["accuracy"] == pytest.approx(local["within_share"], abs=0.1)
    logits = Lookup(TASK)(data.inputs).logits
    noisy = logits + torch.where(data.labels[..., None] == IGNORE, torch.randn_like(logits) * 50, 0.0)
    assert answer_loss(noisy, data.labels) == pytest.approx(answer_loss(logits, data.labels))


def test_a_registry_model_trains_and_stops_early() -> None:
    task = MqarTask(vocab_size=64, seq_len=16, num_pairs=2)
    torch.manual_seed(0)
    model = build("swa", "tiny", match_params=False, vocab_size=64, hidden_size=32, short_conv=True, sliding_window=8)
    data = make_examples(task, 256, seed=1)
    before = evaluate(model, data, window=8)["loss"]
    after = train(model, data, data, TrainSettings(lr=1e-2, steps=40, batch_size=32, eval_every=40), window=8, seed=0)
    assert after["loss"] < before
    assert after["steps"] == 40
    stopped = train(model, data, data, TrainSettings(steps=50, eval_every=5, stop_at=-1.0), window=8, seed=0)
    assert stopped["steps"] == 5


def test_state_bytes_grow_with_the_sequence_only_for_full_attention() -> None:
    kw = {"match_params": False, "short_conv": True}
    attention, swa = build("transformer", "tiny", **kw), build("swa", "tiny", sliding_window=8, **kw)
    ttt = build("ttt-linear", "tiny", **kw)
    assert state_bytes(attention, 64) - state_bytes(attention, 32) == 2 * 2 * 32 * 64 * 4  # K and V, 2 layers
    assert state_bytes(swa, 64) == state_bytes(swa, 32)
    assert state_bytes(ttt, 64) == state_bytes(ttt, 32)


def test_summary_takes_the_best_lr_on_the_shared_seeds() -> None:
    def record(lr: float, seed: int, accuracy: float) -> dict:
        fields = {"accuracy": accuracy, "accuracy_within": accuracy, "accuracy_beyond": float("nan")}
        return {"arch": "swa", "d_model": 32, "num_pairs": 4, "lr": lr, "seed": seed, **fields, "state_bytes": 1,
                "parameters": 2}  # fmt: skip

    records = [record(1e-3, 1, 0.2), record(1e-2, 1, 0.6), record(1e-2, 2, 0.4), record(1e-2, 3, 0.5)]
    (row,) = summarize(records)
    assert row["lr"] == 1e-2
    assert row["seeds"] == 3
    assert row["lr_means"] == {"0.001": 0.2, "0.01": 0.6}
    assert row["accuracy"]["mean"] == pytest.approx(0.5)
    assert row["accuracy"]["low"] < 0.5 < row["accuracy"]["high"]
    assert row["accuracy_beyond"] is None
    assert row["seed_accuracies"] == [0.6, 0.4, 0.5]


def test_cli_sweeps_resumes_and_reports(tmp_path, capsys) -> None:
    args = ["eval", "mqar", "--archs", "swa,ttt-linear", "--d-models", "16", "--pairs", "2", "--seq-len", "16",
            "--vocab", "64", "--steps", "4", "--eval-every", "2", "--train-examples", "64", "--test-examples", "16",
            "--lrs", "1e-3,1e-2", "--seeds", "1,2", "--window", "4", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 * 2 + 2  # the lr sweep on seed 1, then the best lr on seed 2
    assert main(args) == 0
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 6
    assert {"summary.json", "mqar.md", "mqar.png", "command.txt"} <= {p.name for p in tmp_path.iterdir()}
    assert "| swa | 16 | 2 |" in (tmp_path / "mqar.md").read_text()
    assert main([*args[:-2], "--pairs", "9", "--out", str(tmp_path / "bad")]) == 2
    assert "need seq_len >= 36" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args[:-2], "--device", "cuda", "--out", str(tmp_path / "bad")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
