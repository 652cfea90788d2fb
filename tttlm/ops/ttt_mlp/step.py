"""TTT-MLP, one token at a time: the O(1)-per-token decode step (two ``step_linear_layer`` reads)."""

from tttlm.ops.ttt_linear.step import step_linear_layer
from tttlm.ops.ttt_mlp.primal import mlp_chunk

step_chunk = mlp_chunk(step_linear_layer)
