"""Spans of whole mini-batches (the dual form's batched path): how the scan cuts a sequence, and that spans of
any length (the length cap ``SPAN_ROWS`` cut small) give the primal form's outputs, states and gradients."""

from __future__ import annotations

import pytest
import torch
from ttt_testing import Variant, assert_close, assert_state_close, make_inputs

from tttlm.ops import scan
from tttlm.ops.scan import plan_pieces


@pytest.mark.parametrize(
    ("seq", "position", "max_chunk", "max_span", "expected"),
    [
        (10, 0, None, 0, [(4, False), (4, False), (2, False)]),  # no span function: chunks only
        (10, 0, None, 8, [(8, True), (2, False)]),
        (10, 0, None, 1, [(4, True), (4, True), (2, False)]),
        (13, 3, None, 2, [(1, False), (8, True), (4, True)]),  # open mini-batch first, spans of at most 2
        (3, 1, None, 8, [(3, False)]),  # ends inside the open mini-batch
        (5, 0, 1, 0, [(1, False)] * 5),  # the step form, token by token
    ],
)
def test_plan_pieces(
    seq: int, position: int, max_chunk: int | None, max_span: int, expected: list[tuple[int, bool]]
) -> None:
    assert plan_pieces(seq, position, 4, max_chunk, max_span) == expected


@pytest.mark.parametrize("variant", [Variant("linear"), Variant("linear", bias=False, ln=False), Variant("mlp")])
@pytest.mark.parametrize("span_rows", [1, 2 * 2 * 3 * 2])  # one mini-batch per span; two (batch 2, 2 heads, b = 3)
def test_short_spans_equal_primal(monkeypatch: pytest.MonkeyPatch, variant: Variant, span_rows: int) -> None:
    monkeypatch.setattr(scan, "SPAN_ROWS", span_rows)
    inputs = make_inputs(variant, seq=17, mini_batch_size=3, seed=5).as_leaves()
    leaves = list(inputs.named_tensors().values())
    results = {}
    for form in ("primal", "dual"):
        _, state = inputs.run("primal", stop=2)
        z, state = inputs.run(form, start=2, initial_state=state)  # starts inside a mini-batch, ends inside one
        grads = torch.autograd.grad((z * z).sum() + sum((w * w).sum() for w in state.weights), leaves)
        results[form] = z, state, grads
    assert_close(results["dual"][0], results["primal"][0])
    assert_state_close(results["dual"][1], results["primal"][1])
    for g_dual, g_primal in zip(results["dual"][2], results["primal"][2], strict=True):
        assert_close(g_dual, g_primal, rtol=1e-9, atol=1e-11)
