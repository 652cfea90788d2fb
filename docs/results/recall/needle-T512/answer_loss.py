"""Does a model read the needle? Its loss on the right answer against its loss on another sample's answer.

For the S-NIAH-1 evaluation samples at length 512 (the evaluation's generator, seed 0, samples 0..N-1), the prompt is
followed once by its own answer and once by the answer of the next sample (another 7-digit number from the
evaluation's half of the value space); a model that retrieves gives its own answer the lower loss. Prints, per run,
the mean loss per answer token of both and the fraction of samples where the right answer has the lower total loss
(0.5: no retrieval), with a 95% Wilson interval.

    python docs/results/recall/needle-T512/answer_loss.py runs/helper-needle/{needle-all,control,needle-answer}
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tttlm.eval.niah import NiahTaskMaker, wilson_interval
from tttlm.models import load

SAMPLES, LENGTH = 40, 512


def answer_losses(model, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """(len(answer),) next-token losses of ``answer`` after ``prompt``."""
    ids = torch.tensor([prompt + answer])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(answer), reduction="none")


@torch.no_grad()
def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    for run in runs:
        model = load(Path(run) / "model").eval()
        maker = NiahTaskMaker(AutoTokenizer.from_pretrained(str(Path(run) / "model")))
        samples = [maker.sample("s-niah-1", LENGTH, index=k) for k in range(SAMPLES + 1)]
        right, wrong, wins = [], [], 0
        for s, other in itertools.pairwise(samples):
            a = answer_losses(model, s.ids, s.answer_ids)
            b = answer_losses(model, s.ids, other.answer_ids)
            right.append(a.mean().item())
            wrong.append(b.mean().item())
            wins += a.sum() < b.sum()
        low, high = wilson_interval(wins, SAMPLES)
        print(
            f"{run}: loss per answer token {sum(right) / SAMPLES:.3f} (right) vs {sum(wrong) / SAMPLES:.3f} (another "
            f"sample's); right answer lower in {wins}/{SAMPLES} = {wins / SAMPLES:.2f} [{low:.2f}, {high:.2f}]"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
