"""The configs of the Mamba baselines: transformers' own, under our model types so that ``AutoModelForCausalLM``
rebuilds the adapted classes of ``ssm.modeling``."""

from __future__ import annotations

from transformers import Mamba2Config, MambaConfig


class MambaLMConfig(MambaConfig):
    """``MambaConfig`` under the model type "tttlm_mamba" (loads as ``SelectiveScanForCausalLM``).

    Passing ``intermediate_size`` (the inner width d_inner) overrides the library's ``expand × hidden_size`` (the
    value given is set after the config computes its own, and saved in config.json, so it survives a reload).
    """

    model_type = "tttlm_mamba"


class Mamba2LMConfig(Mamba2Config):
    """``Mamba2Config`` under the model type "tttlm_mamba2" (loads as ``SSDForCausalLM``)."""

    model_type = "tttlm_mamba2"
