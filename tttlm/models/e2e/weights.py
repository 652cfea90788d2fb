"""An ``E2EForCausalLM`` holding given weights, built without a second copy of them (``tttlm convert`` of release
checkpoints, ``tttlm e2e-init``)."""

from __future__ import annotations

import torch
from torch import Tensor

from tttlm.models.e2e.configuration import E2EConfig
from tttlm.models.e2e.modeling import E2EForCausalLM
from tttlm.models.registry import ARCH_ATTR


def e2e_with_weights(config: E2EConfig, state: dict[str, Tensor], error: type[Exception], hint: str) -> E2EForCausalLM:
    """The model of ``config`` with exactly the weights ``state`` (our state-dict names), as the registry's ttt-e2e.

    Built on the meta device and the tensors assigned, so the weights are in memory once. A tensor of the wrong shape
    raises ``error`` with its name, both shapes and ``hint``; a missing or extra name raises as ``load_state_dict``
    does (strict).
    """
    with torch.device("meta"):
        model = E2EForCausalLM(config)
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise error(f"weight {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)} {hint}")
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    setattr(model.config, ARCH_ATTR, "ttt-e2e")
    return model
