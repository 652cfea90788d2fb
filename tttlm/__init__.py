"""tttlm: Test-Time-Training sequence models in PyTorch."""

__version__ = "0.1.0"

# Importing the models registers the "tttlm" type with transformers' Auto classes (AutoModelForCausalLM, ...).
from tttlm.models import TTTCache, TTTConfig, TTTForCausalLM, TTTModel

__all__ = ["TTTCache", "TTTConfig", "TTTForCausalLM", "TTTModel", "__version__"]
