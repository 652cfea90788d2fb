"""TTT language models (paper 1): TTT-Linear and TTT-MLP layers on a Transformer or Mamba backbone."""
