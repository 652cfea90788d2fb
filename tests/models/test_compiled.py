"""``torch.compile`` of registry models (``tttlm.models.compiled``): compiled and eager give the same loss and
gradients, the archs that should trace without graph breaks do, and the arch that cannot train compiled says why.

Backends: most archs are checked with ``aot_eager``, which captures forward and backward exactly as inductor does
(Dynamo's graphs, AOTAutograd's joint graph and its partition) but runs them with eager kernels, so a test costs a
few seconds of tracing. Inductor itself compiles a tiny TTT-Linear training step for minutes on this 2-core CPU
(docs/ARCHITECTURE.md, "torch.compile"), so one inductor test covers its code generation on the cheapest arch, a
one-layer sliding-window attention model (about 20 s).

Tolerance: float32, relative 1e-4 and absolute 1e-5 of the largest gradient entry. The compiled graphs
reassociate sums (of up to 2 × 32 tokens × 64 channels here) and inductor fuses elementwise chains, which moves
results by a few float32 ulps amplified through two layers and the loss: measured ≤ 2e-6 relative. A wrong graph
(a missing term, a detached path, RoPE rotated the other way) is off by O(1).
"""

from __future__ import annotations

import pytest
import torch

from tttlm.models import build, compiled

SEQ, BATCH = 32, 2
RTOL, ATOL = 1e-4, 1e-5


def _loss_and_grads(model: torch.nn.Module, loss_of, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_of(ids, ids)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _assert_agree(arch: str, backend: str, *, breaks: int | None, **overrides: object) -> None:
    """Eager and compiled loss and gradients of ``arch`` agree (float32); ``breaks``: the graph breaks expected
    (None: any number, for archs whose ops break the graph on purpose)."""
    torch.manual_seed(0)
    model = build(arch, "tiny", **overrides).train()
    ids = torch.randint(model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    eager_loss, eager_grads = _loss_and_grads(model, lambda i, t: model(input_ids=i, labels=t).loss, ids)
    with compiled.cold_compile_cache():
        before = compiled.CompileCounters.now()
        loss_of = compiled.compiled_loss(model, backend)
        compiled_loss, compiled_grads = _loss_and_grads(model, loss_of, ids)
        after = compiled.CompileCounters.now()
    # it did compile: comparing eager with eager could not fail
    assert after.graphs > before.graphs
    if breaks is not None:
        assert after.graph_breaks - before.graph_breaks == breaks
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=RTOL, atol=ATOL)
    assert len(compiled_grads) == len(eager_grads) > 0
    scale = max(float(g.abs().max()) for g in eager_grads)
    for got, expected in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL * scale)


@pytest.mark.parametrize(
    ("arch", "breaks"),
    [
        # no graph break: RoPE's real form and the id check skipped under compile are what make these whole
        ("transformer", 0),
        ("ttt-linear", 0),
        ("ttt-mlp", 0),
        ("swa", 0),
        ("mamba2-swa", 0),
        # the gated delta rule's and the selective scan's loops write into slices (out=): eager between graphs
        ("gated-deltanet", None),
        ("mamba", None),
    ],
)
def test_compiled_training_step_matches_eager(arch: str, breaks: int | None) -> None:
    _assert_agree(arch, "aot_eager", breaks=breaks)


def test_inductor_training_step_matches_eager() -> None:
    """Inductor's generated kernels, on the cheapest arch (one SWA layer: ~20 s of compiling here)."""
    _assert_agree("swa", "inductor", breaks=0, num_hidden_layers=1)


def test_compiled_model_keeps_its_state_dict_keys() -> None:
    model = build("transformer", "tiny")
    keys = list(model.state_dict())
    compiled.compile_module(model, "eager")
    assert list(model.state_dict()) == keys
    assert not any(key.startswith("_orig_mod.") for key in model.state_dict())


def test_compiled_loss_still_checks_the_ids() -> None:
    """Under compile the model skips its id range check (a graph break); the compiled loss checks them first."""
    model = build("swa", "tiny")
    loss_of = compiled.compiled_loss(model, "eager")
    bad = torch.full((1, 8), model.config.vocab_size)
    with pytest.raises(ValueError, match="outside"):
        loss_of(bad, bad)


def test_ttt_e2e_cannot_train_compiled() -> None:
    with pytest.raises(compiled.CompileUnsupportedError, match="double backward"):
        compiled.check_compilable("ttt-e2e", training=True)
    compiled.check_compilable("ttt-e2e", training=False)  # inference has no meta-gradient
    compiled.check_compilable("ttt-linear", training=True)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        compiled.compiled_loss(build("swa", "tiny"), "tensorrt")
