"""Where each registry arch's choices come from (``tttlm models --json`` prints them as ``sources``), and its block
pattern as one letter per mixer.

Papers: "paper 1" = Sun et al. 2024, Learning to (Learn at Test Time) (arXiv 2407.04620); "paper 2" = TTT-E2E
(arXiv 2512.23675). Reference code is named ``owner/repo path``.
"""

from __future__ import annotations

from transformers import LlamaConfig, PretrainedConfig

from tttlm.models.e2e.configuration import E2EConfig
from tttlm.models.ssm.configuration import Mamba2LMConfig, MambaLMConfig
from tttlm.models.stack.configuration import StackConfig
from tttlm.models.ttt.configuration import TTTConfig

# one letter per mixer of a block; a block with several mixers is written in parentheses, e.g. "(ST)"
MIXER_LETTERS = {
    "sliding_attention": "S",
    "full_attention": "F",
    "gated_deltanet": "G",
    "ttt": "T",
    "lact": "L",
    "short_conv": "C",
    "mamba": "M",
    "mamba2": "M",
    "ttt_e2e": "E",
}
LETTER_MEANINGS = {
    "S": "sliding-window attention",
    "F": "full attention",
    "G": "Gated DeltaNet",
    "T": "TTT layer (TTT-Linear / TTT-MLP)",
    "L": "LaCT layer: SWA and a SwiGLU fast weight in one mixer",
    "C": "short causal conv sub-block",
    "M": "Mamba / Mamba-2 mixer",
    "E": "TTT-E2E block: SWA with an MLP updated at test time",
}

_MATCHED = {
    "MLP width at the preset (2048 at 125m); match_params='ttt-linear', a runner option, solves it to TTT-Linear's "
    "parameter count": "paper 1 §3 (the preset's widths); the option is ours (registry._solve_width)"
}
_RELEASE_BLOCK = {
    "pre+post RMSNorm, per-head QK-norm, interleaved RoPE theta 500K": "test-time-training/e2e ttt/model/"
    "transformer.py, attention.py; configs/experiment/*/pretrain/pretrain-*-fa.yaml (paper 2's baselines)",
}
_WINDOW = {
    "window 2048 at 2K context (paper 2: 8K at 8K context)": "paper 2 §3.1; registry.SLIDING_WINDOW (tiny 64)",
}
SOURCES: dict[str, dict[str, str]] = {
    "ttt-linear": {
        "sizes 125m-1.3b, b = 16, inner lr 1.0": "paper 1 §3, Table/Appendix C; ttt-lm-jax scripts/ttt_linear/*.sh",
        "transformer backbone: no output gate": "ttt-lm-pytorch TTTConfig use_gate=False; ttt-lm-jax TTTLinearBase",
        "mamba backbone: gate, shared q/k + convs, pre-conv": "ttt-lm-jax ttt/models/ttt_layer.py TTTLinear",
    },
    "ttt-mlp": {
        "sizes 125m-1.3b, b = 16, inner lr 0.1, inner MLP 4 x": "paper 1 §3; ttt-lm-jax scripts/ttt_mlp/*.sh",
        "inner lr warmed 0.01 -> 0.1 over the outer warm-up": "ttt-lm-jax README, scripts/ttt_mlp/*.sh",
        "transformer backbone: no output gate": "ttt-lm-pytorch use_gate=False; ttt-lm-jax TTTMLPBase",
    },
    "transformer": {
        "Llama block at the preset's dims (width 2048 MLP at 125m)": "paper 1 §3 (the Mamba paper's Llama recipe)",
        **_MATCHED,
    },
    "full-attention": {
        "full attention in every block (paper 2's full-attention baseline)": "paper 2 §3.1; test-time-training/e2e "
        "configs/experiment/*/pretrain/pretrain-*-fa.yaml (seq_modeling_block: self_attention)",
        **_RELEASE_BLOCK,
        "rope_extension: theta 1M/2M/5M/10M at 2/4/8/16 x the pre-training context": "paper 2 Appendix (16K-128K "
        "after 8K); test-time-training/e2e configs/experiment/*/extension/ext-*-fa-32K.yaml (2M), "
        "ext-3b-fa-128K.yaml (10M)",
        **_MATCHED,
    },
    "swa": {**_RELEASE_BLOCK, **_WINDOW, **_MATCHED},
    "hybrid": {
        "five SWA layers then one full attention (5:1)": "paper 2 §3.1",
        "tiny: 6 layers of width 32 (SSSSSF, head dim 16)": "ours (registry.HYBRID_TINY)",
        **_RELEASE_BLOCK,
        **_WINDOW,
        **_MATCHED,
    },
    "mamba": {"2 Mamba layers per Transformer block, d_inner solved": "paper 1 §3 (the Mamba paper's depths)"},
    "mamba2": {"head dim 64, state 128, chunk 256, one group": "Mamba-2 paper; registry.MAMBA2 (tiny smaller)"},
    "mamba2-swa": {
        "Mamba-2 in even layers, SWA in odd, an MLP after each (1:1)": "microsoft/Samba lit_gpt/config.py Samba_421M "
        "(mb_per_layer 2, local_window 2048); the layout of gdn-swa (GatedDeltaNet-H1, built on Samba's code)",
        "hybrids of these layers with SWA": "paper 2 §3.1",
        "Mamba-2 mixer: head dim 64, state 128, expand 2, one group, chunk 256": "transformers Mamba2Mixer; "
        "registry.MAMBA2 (the mamba2 arch's settings, tiny smaller)",
        **_WINDOW,
        **_MATCHED,
    },
    "gated-deltanet": {
        "key head dim 256, key width ~0.75 x hidden, expand_v 2": "fla-org/flash-linear-attention "
        "fla/layers/gated_deltanet.py defaults",
        **_MATCHED,
    },
    "gdn-swa": {
        "Gated DeltaNet in even layers, SWA in odd (H1)": "NVlabs/GatedDeltaNet lit_gpt/config.py GatedDeltaNet_H1_*",
        "hybrids of these layers with SWA": "paper 2 §3.1",
        **_WINDOW,
        **_MATCHED,
    },
    "ttt-kvb": {
        "TTT-KVB = LaCT": "paper 2 §3.1, reference [110] (Zhang et al. 2025, Test-Time Training Done Right)",
        "SWA + SwiGLU fast weight in one layer, shared qkv/o": "a1600012888/LaCT lact_llm/lact_model/"
        "layer_lact_swiglu.py",
        "chunk = window = 2048, 4 fast heads, rank 32, momentum, theta 1e6": "a1600012888/LaCT lact_llm/configs/"
        "760M_lact_swiglu_nh4_fwlow_rank_momentum.json",
        "update rule: dot-product loss, per-token lrs, weight norm": "a1600012888/LaCT lact_llm/lact_model/"
        "ttt_operation.py",
        **_MATCHED,
    },
    "ttt-kvb-linear": {
        "SWA + paper 1's TTT-Linear in every block, b = 256": "ours (today's TTT-KVB before issue 17)",
        **_WINDOW,
        **_MATCHED,
    },
    "ttt-e2e": {
        "block, sizes, window 8K, b = 1K, last 1/4 of blocks updated": "test-time-training/e2e configs/model/*.yaml, "
        "configs/experiment/*/pretrain/*-e2e.yaml",
    },
}


def layer_pattern(config: PretrainedConfig) -> str:
    """One letter per block (``MIXER_LETTERS``; several mixers of one block in parentheses)."""
    if isinstance(config, StackConfig):
        blocks = [[MIXER_LETTERS[m] for m in mixers] for mixers in config.layer_mixers]
    elif isinstance(config, TTTConfig):
        blocks = [["C", "T"] if config.pre_conv else ["T"]] * config.num_hidden_layers
    elif isinstance(config, E2EConfig):
        first, conv = config.first_updated_layer, ["C"] if config.short_conv else []
        blocks = [conv + (["S"] if i < first else ["E"]) for i in range(config.num_hidden_layers)]
    elif isinstance(config, (MambaLMConfig, Mamba2LMConfig)):
        blocks = [["M"]] * config.num_hidden_layers
    elif isinstance(config, LlamaConfig):
        blocks = [["F"]] * config.num_hidden_layers
    else:
        raise TypeError(f"no layer pattern for {type(config).__name__}")
    return "".join(block[0] if len(block) == 1 else f"({''.join(block)})" for block in blocks)
