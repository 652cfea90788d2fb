"""``generate``'s per-step scores are the logits of one full forward over the generated sequence, for every arch.

This is the test that catches a model losing its state between decode steps (the cache passed under a name the
model ignores, a state not carried over): comparing the argmax tokens of a random model does not, since its logits
are nearly flat and a wrong state often picks the same token. So each model is first trained for a few steps on a
counting task (token t + 1 follows token t) until its next-token loss is well below chance, and then the raw
per-step logits are compared in float64.
"""

from __future__ import annotations

import pytest
import torch
from baseline_testing import CASE_IDS, CASES, make
from transformers import PreTrainedModel

PERIOD = 48  # the counting task's tokens: 0 … PERIOD - 1, then 0 again
STEPS, LR = 60, 1e-2


def counting(batch: int, seq: int, seed: int) -> torch.Tensor:
    """(batch, seq) sequences start, start + 1, … (mod PERIOD) from random starts."""
    starts = torch.randint(0, PERIOD, (batch, 1), generator=torch.Generator().manual_seed(seed))
    return (starts + torch.arange(seq)) % PERIOD


def trained(arch: str, overrides: dict) -> tuple[PreTrainedModel, float, float]:
    """A tiny ``arch`` model trained on the counting task (float32), returned in float64 and eval mode, with its
    loss before and after training."""
    model = make(arch, torch.float32, **overrides).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    losses = []
    for step in range(STEPS):
        ids = counting(8, 24, seed=step)
        loss = model(ids, labels=ids, use_cache=False).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.double().eval(), losses[0], losses[-1]


@pytest.mark.parametrize(("arch", "overrides"), CASES, ids=CASE_IDS)
def test_generate_scores_equal_one_full_forward(arch: str, overrides: dict) -> None:
    model, first_loss, last_loss = trained(arch, overrides)
    assert last_loss < 0.5 * first_loss, f"{arch} did not learn the counting task ({first_loss:.2f} -> {last_loss:.2f})"
    prompt = counting(2, 9, seed=1000)
    new_tokens = 7
    for use_cache in (True, False):
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=use_cache,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        sequence = out.sequences
        assert sequence.shape == (2, prompt.shape[1] + new_tokens)
        with torch.no_grad():
            full = model(sequence, use_cache=False).logits[:, prompt.shape[1] - 1 : -1].double()
        # (batch, new tokens, vocab): the raw logits of each decode step, which generate hands out rounded to
        # float32; the float64 paths agree to ~1e-12, so what remains is that rounding (half an ulp, < 1e-6 for
        # logits of magnitude < 16), far below the O(1) error of a lost state
        steps = torch.stack(out.logits, dim=1).double()
        torch.testing.assert_close(
            steps, full, rtol=0, atol=2e-6, msg=lambda m, u=use_cache: f"{arch} use_cache={u}: {m}"
        )
        # the trained model counts on from the prompt: its state was carried through every step
        expected = counting(2, sequence.shape[1], seed=1000)
        assert torch.equal(sequence, expected), f"{arch} use_cache={use_cache} did not count on"
