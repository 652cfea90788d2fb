"""Functional ops: the TTT ops (one signature per op, several forms: ``form="primal" | "dual" | "step" | "triton" |
"auto"``, see ``forms``), the selective scan of Mamba and the gated delta rule of Gated DeltaNet."""

from tttlm.ops.forms import FORMS, INNER_MODELS, SEQUENCE_FORMS
from tttlm.ops.gated_delta_rule import gated_delta_rule
from tttlm.ops.nonparametric import nadaraya_watson
from tttlm.ops.selective_scan import selective_scan
from tttlm.ops.state import TTTState
from tttlm.ops.ttt_linear import ttt_linear
from tttlm.ops.ttt_mlp import ttt_mlp

__all__ = [
    "FORMS",
    "INNER_MODELS",
    "SEQUENCE_FORMS",
    "TTTState",
    "gated_delta_rule",
    "nadaraya_watson",
    "selective_scan",
    "ttt_linear",
    "ttt_mlp",
]
