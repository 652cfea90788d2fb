"""The TTT-E2E release fixtures (``tests/fixtures/ttt-e2e-official-*``, see their README) as the release tests and the
converter tests read them. Further fixtures (another release checkpoint of the same layout) are picked up by name,
or from the directories in ``TTTLM_E2E_FIXTURES`` (separated by ``os.pathsep``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from tttlm.models.e2e.release import from_release, release_config
from tttlm.train.inner_lr import inner_lr_multiplier

FIXTURES = sorted(Path(__file__).parents[1].glob("fixtures/ttt-e2e-official-*")) + [
    Path(p) for p in os.environ.get("TTTLM_E2E_FIXTURES", "").split(os.pathsep) if p
]


@dataclass
class Fixture:
    """One fixture: the release's config sections, its parameters (release names) and what it computed."""

    config: dict
    params: dict[str, Tensor]
    expected: dict[str, Tensor]

    @classmethod
    def load(cls, root: Path) -> Fixture:
        return cls(
            json.loads((root / "config.json").read_text()),
            load_file(root / "params.safetensors"),
            load_file(root / "expected.safetensors"),
        )

    @property
    def ids(self) -> Tensor:
        """(1, T + 1): the inputs and the last target, so that every one of the T positions has its target."""
        return torch.cat([self.expected["input_ids"], self.expected["target_tokens"][-1:]])[None]

    @property
    def warmup_multiplier(self) -> float:
        training = self.config["training"]
        lr = training["optimizer_inner"]["lr"]
        return inner_lr_multiplier(training["step"], training["ilr_init"] / lr, training["ilr_warmup_steps"])

    def grads(self) -> dict[str, Tensor]:
        """The release's meta-gradients under our parameter names."""
        release = {k.removeprefix("grad."): v for k, v in self.expected.items() if k.startswith("grad.")}
        grads = from_release(release, release_config(self.config["model"], self.config["training"]))
        grads.pop("lm_head.weight", None)  # tied: the embedding's gradient holds both uses
        return grads
