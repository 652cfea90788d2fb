"""TTT-E2E (paper 2): a sliding-window Transformer whose last blocks keep learning at test time."""
