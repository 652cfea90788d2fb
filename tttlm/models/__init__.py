"""Transformers-compatible language models: the TTT LMs and the baselines they are compared with.

Importing this package registers our model types ("tttlm", "tttlm_stack", "tttlm_mamba", "tttlm_mamba2",
"tttlm_e2e") with ``AutoConfig``, ``AutoModel`` (not "tttlm_e2e") and ``AutoModelForCausalLM``, so
``AutoModelForCausalLM.from_pretrained(dir)`` (or ``load(dir)``) rebuilds any saved model.
``build(arch, size, **overrides)`` is the one entry point for every architecture (``ARCHS``); see ``registry.py``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from tttlm.models.e2e.cache import E2ECache
from tttlm.models.e2e.configuration import E2EConfig
from tttlm.models.e2e.modeling import E2EForCausalLM, E2EModel
from tttlm.models.registry import ARCHS, SIZES, arch_of, build, load, make_config, param_count
from tttlm.models.ssm.configuration import Mamba2LMConfig, MambaLMConfig
from tttlm.models.ssm.modeling import SelectiveScanForCausalLM, SSDForCausalLM
from tttlm.models.stack.cache import StackCache
from tttlm.models.stack.configuration import StackConfig
from tttlm.models.stack.modeling import StackForCausalLM, StackModel
from tttlm.models.streaming import Prefill, prefill, supports_chunked_prefill
from tttlm.models.ttt.cache import TTTBlockCache, TTTCache
from tttlm.models.ttt.configuration import PRESETS, TTTConfig
from tttlm.models.ttt.modeling import TTTBlock, TTTForCausalLM, TTTModel, TTTPreTrainedModel

# exist_ok: re-registering our own classes (e.g. after importlib.reload) is harmless
AutoConfig.register(TTTConfig.model_type, TTTConfig, exist_ok=True)
AutoModel.register(TTTConfig, TTTModel, exist_ok=True)
AutoModelForCausalLM.register(TTTConfig, TTTForCausalLM, exist_ok=True)
AutoConfig.register(StackConfig.model_type, StackConfig, exist_ok=True)
AutoModel.register(StackConfig, StackModel, exist_ok=True)
AutoModelForCausalLM.register(StackConfig, StackForCausalLM, exist_ok=True)
AutoConfig.register(MambaLMConfig.model_type, MambaLMConfig, exist_ok=True)
AutoModelForCausalLM.register(MambaLMConfig, SelectiveScanForCausalLM, exist_ok=True)
AutoConfig.register(Mamba2LMConfig.model_type, Mamba2LMConfig, exist_ok=True)
AutoModelForCausalLM.register(Mamba2LMConfig, SSDForCausalLM, exist_ok=True)
# TTT-E2E: no AutoModel (E2EModel's inner loop needs the LM head, see models/e2e/modeling.py)
AutoConfig.register(E2EConfig.model_type, E2EConfig, exist_ok=True)
AutoModelForCausalLM.register(E2EConfig, E2EForCausalLM, exist_ok=True)

__all__ = [
    "ARCHS",
    "PRESETS",
    "SIZES",
    "E2ECache",
    "E2EConfig",
    "E2EForCausalLM",
    "E2EModel",
    "Mamba2LMConfig",
    "MambaLMConfig",
    "Prefill",
    "SSDForCausalLM",
    "SelectiveScanForCausalLM",
    "StackCache",
    "StackConfig",
    "StackForCausalLM",
    "StackModel",
    "TTTBlock",
    "TTTBlockCache",
    "TTTCache",
    "TTTConfig",
    "TTTForCausalLM",
    "TTTModel",
    "TTTPreTrainedModel",
    "arch_of",
    "build",
    "load",
    "make_config",
    "param_count",
    "prefill",
    "supports_chunked_prefill",
]
