"""tttlm: Test-Time-Training sequence models in PyTorch."""

__version__ = "0.1.0"
