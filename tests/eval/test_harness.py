"""lm-evaluation-harness as a real client: its CLI (``lm_eval --model hf``) evaluates a saved tiny checkpoint of each
family on our offline tasks at batch size 4, with the same responses as ``tttlm eval harness`` at batch size 1, and
its loglikelihoods equal our own computation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tttlm.cli import main
from tttlm.data.tokenizer import train_tokenizer
from tttlm.eval.harness import OUR_TASKS, TASKS_DIR, model_args, run_harness
from tttlm.models import build

pytest.importorskip("lm_eval", reason='the harness is the "eval" extra (part of "test")')

FAMILIES = ("ttt-linear", "ttt-e2e", "swa")  # TTT, TTT-E2E, a baseline
VOCAB = 300


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("harness")
    tokenizer = train_tokenizer(["The sun rises in the east. " * 30, "one two three four five " * 30], root / "tok",
                                vocab_size=VOCAB)  # fmt: skip
    dirs = {}
    for arch in FAMILIES:
        torch.manual_seed(0)
        overrides = {"sliding_window": 8, "mini_batch_size": 4} if arch == "ttt-e2e" else {}
        model = build(arch, "tiny", vocab_size=VOCAB, **overrides).eval()
        model.save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
        dirs[arch] = root / arch
    return dirs


def _read_samples(output_path: Path, task: str) -> list[dict]:
    """The per-request records that ``lm_eval --log_samples --output_path`` wrote for ``task`` (one JSON a line)."""
    (path,) = sorted(Path(output_path).rglob(f"samples_{task}_*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _our_loglikelihood(model: torch.nn.Module, tokenizer, context: str, continuation: str) -> float:
    """Σ log p(continuation | context), tokenized as the harness does (the whole text, then the context's tokens
    are cut off the front)."""
    whole = tokenizer(context + continuation)["input_ids"]
    n_context = len(tokenizer(context)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return float(sum(logp[t - 1, whole[t]] for t in range(n_context, len(whole))))


def test_the_harness_cli_at_batch_4_equals_batch_1_and_our_loglikelihoods(model_dirs, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    runs = {
        arch: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "run",
                "--model",
                "hf",
                "--model_args",
                model_args(path),
                "--tasks",
                ",".join(OUR_TASKS),
                "--include_path",
                str(TASKS_DIR),
                "--batch_size",
                "4",
                "--device",
                "cpu",
                "--output_path",
                str(tmp_path / arch),
                "--log_samples",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for arch, path in model_dirs.items()
    }
    for arch, run in runs.items():
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, f"{arch}: {output[-3000:]}"
        one = run_harness(model_dirs[arch], list(OUR_TASKS), batch_size=1, log_samples=True)
        model = AutoModelForCausalLM.from_pretrained(model_dirs[arch]).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dirs[arch])
        for task in OUR_TASKS:
            four = {s["doc_id"]: s for s in _read_samples(tmp_path / arch, task)}
            assert set(four) == {s["doc_id"] for s in one["samples"][task]}
            for sample in one["samples"][task]:
                batched = four[sample["doc_id"]]
                if task == "tttlm_continue":  # greedy generation: the same text
                    assert batched["resps"] == sample["resps"], (arch, sample["doc"])
                    continue
                for k, choice in enumerate(sample["doc"]["choices"]):
                    harness_1 = float(sample["resps"][k][0][0])
                    harness_4 = float(batched["resps"][k][0][0])
                    ours = _our_loglikelihood(model, tokenizer, sample["doc"]["context"], choice)
                    # float32 model, float32 log-softmax in the harness vs float64 here
                    assert harness_4 == pytest.approx(harness_1, abs=1e-4), (arch, sample["doc"], choice)
                    assert harness_1 == pytest.approx(ours, abs=1e-4), (arch, sample["doc"], choice)


def test_tttlm_eval_harness_writes_its_results(model_dirs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "harness", "--ckpt", str(model_dirs["ttt-linear"]), "--tasks", "tttlm_cloze"]) == 0
    results = json.loads((model_dirs["ttt-linear"] / "eval" / "harness.json").read_text())["results"]
    assert 0.0 <= results["tttlm_cloze"]["acc,none"] <= 1.0
    assert "tttlm_cloze: acc" in capsys.readouterr().out
