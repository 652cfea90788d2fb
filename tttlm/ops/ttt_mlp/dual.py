"""TTT-MLP, dual form: each of the two inner layers read through ``dual_linear_layer``.

Layer 1 sees the keys/queries and the gradients ∂ℓ/∂z1; layer 2 sees the hidden activations (the keys'
at W_s, the queries' at their own W1_i) and ∂ℓ/∂z2. No per-token weights are formed.
"""

from tttlm.ops.ttt_linear.dual import dual_linear_layer
from tttlm.ops.ttt_mlp.naive import mlp_chunk

dual_chunk = mlp_chunk(dual_linear_layer)
