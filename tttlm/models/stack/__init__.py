"""The stack baselines: blocks of chosen sequence mixers (sliding-window or full attention, Gated DeltaNet,
TTT-KVB), then a SwiGLU MLP."""
