"""Functional TTT ops: one signature per op, several forms (``form="naive" | "dual" | "step" | "triton" | "auto"``)."""

from tttlm.ops.nonparametric import nadaraya_watson
from tttlm.ops.state import TTTState
from tttlm.ops.ttt_linear import ttt_linear
from tttlm.ops.ttt_mlp import ttt_mlp

__all__ = ["TTTState", "nadaraya_watson", "ttt_linear", "ttt_mlp"]
