"""Saved models that load without ``import tttlm``: an ``auto_map`` in config.json and a small module beside it.

This is how custom architectures are shared on the Hugging Face Hub: ``AutoModelForCausalLM.from_pretrained(dir,
trust_remote_code=True)`` reads ``config.json``'s ``auto_map`` ({auto class: "module.Class"}), imports ``module.py``
from the directory and takes the class from it. Our module (``tttlm_auto.py``) holds no model code: it imports the
classes from the installed tttlm, so the loaded model is the package's own class (``isinstance`` works, tttlm's
registrations happen), and it loads in a process that never imported tttlm — the lm-eval-harness CLI, a
``transformers.pipeline``. What it needs: tttlm installed where the model is loaded, and ``trust_remote_code=True``
(transformers asks for it for any code that is not its own). In a process that has imported tttlm the auto classes
know our model types already and use them without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

AUTO_MODULE = "tttlm_auto"  # written as tttlm_auto.py beside config.json


def auto_map(model: PreTrainedModel) -> dict[str, str]:
    """The ``auto_map`` of a saved ``model``: its config class for ``AutoConfig``, its own class for
    ``AutoModelForCausalLM`` (an LM) or ``AutoModel`` (a backbone)."""
    auto_class = "AutoModelForCausalLM" if hasattr(model, "lm_head") else "AutoModel"
    return {
        "AutoConfig": f"{AUTO_MODULE}.{type(model.config).__name__}",
        auto_class: f"{AUTO_MODULE}.{type(model).__name__}",
    }


def auto_module_source(model: PreTrainedModel) -> str:
    """The text of ``tttlm_auto.py`` for ``model``: imports of its config and model classes from tttlm."""
    lines = ['"""Loads this model with the installed tttlm (see tttlm/models/remote_code.py)."""', ""]
    for cls in (type(model.config), type(model)):
        lines.append(f"from {cls.__module__} import {cls.__name__}")
    names = ", ".join(f'"{cls.__name__}"' for cls in (type(model.config), type(model)))
    return "\n".join([*lines, "", f"__all__ = [{names}]", ""])


class RemoteCodeMixin:
    """``save_pretrained`` that also writes ``tttlm_auto.py`` and the ``auto_map`` pointing at it. Mixed in before
    the transformers base class of every model family of ours."""

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained``, plus the auto module and ``config.auto_map``."""
        # a class once loaded through remote code is marked for transformers' own remote-code saving, which would
        # copy our source modules into the directory instead: ours is written below
        self._auto_class = None
        self.config._auto_class = None
        self.config.auto_map = auto_map(self)
        super().save_pretrained(save_directory, *args, **kwargs)
        (Path(save_directory) / f"{AUTO_MODULE}.py").write_text(auto_module_source(self))
