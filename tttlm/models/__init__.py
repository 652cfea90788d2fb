"""Transformers-compatible TTT language models (Transformer or Mamba backbone, TTT-Linear or TTT-MLP layers).

Importing this package registers the "tttlm" model type with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``, so ``AutoModelForCausalLM.from_pretrained(dir)`` loads a saved ``TTTForCausalLM``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from tttlm.models.cache import TTTBlockCache, TTTCache
from tttlm.models.configuration import PRESETS, TTTConfig
from tttlm.models.modeling import TTTBlock, TTTForCausalLM, TTTModel, TTTPreTrainedModel

# exist_ok: re-registering our own classes (e.g. after importlib.reload) is harmless
AutoConfig.register(TTTConfig.model_type, TTTConfig, exist_ok=True)
AutoModel.register(TTTConfig, TTTModel, exist_ok=True)
AutoModelForCausalLM.register(TTTConfig, TTTForCausalLM, exist_ok=True)

__all__ = [
    "PRESETS",
    "TTTBlock",
    "TTTBlockCache",
    "TTTCache",
    "TTTConfig",
    "TTTForCausalLM",
    "TTTModel",
    "TTTPreTrainedModel",
]
