"""Training: YAML config -> model from the registry -> AdamW loop with exact resume, DDP/FSDP2 under torchrun.

train(config_or_path, resume=False) -> run directory
load_config(path) -> TrainConfig
make_model(arch, size, overrides) -> a transformers causal LM
"""

from tttlm.train.config import ConfigError, TrainConfig, config_from_dict, load_config
from tttlm.train.factory import make_model
from tttlm.train.loop import NonFiniteError, TrainingInterrupted, train
from tttlm.train.metrics import read_metrics

__all__ = [
    "ConfigError",
    "NonFiniteError",
    "TrainConfig",
    "TrainingInterrupted",
    "config_from_dict",
    "load_config",
    "make_model",
    "read_metrics",
    "train",
]
