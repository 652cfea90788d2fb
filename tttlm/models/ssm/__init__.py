"""The Mamba baselines: transformers' Mamba and Mamba-2, adapted to the registry's call contract."""
