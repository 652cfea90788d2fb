"""``tttlm models``: the registry's architectures at one size, with parameter counts (built on the meta device)."""

from __future__ import annotations

import argparse
from typing import Any

from transformers import LlamaConfig, PretrainedConfig

from tttlm.models.e2e.configuration import E2EConfig
from tttlm.models.registry import (
    ARCHS,
    SIZES,
    count_parameters,
    make_config,
    reference_config,
)
from tttlm.models.ssm.configuration import Mamba2LMConfig, MambaLMConfig
from tttlm.models.stack.configuration import StackConfig
from tttlm.models.ttt.configuration import TTTConfig
from tttlm.models.ttt.modeling import TTTForCausalLM


def _size(text: str) -> str:
    key = text.lower()
    if key not in SIZES:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(SIZES)}; got {text!r}")
    return key


def add_models_command(commands: Any) -> None:
    """Add the ``models`` sub-command to the ``tttlm`` sub-parsers ``commands``."""
    parser = commands.add_parser(
        "models",
        help="list the model architectures with their parameter counts at a size preset",
        description="Print every architecture of the model registry (tttlm.models.build) at one size preset: "
        "parameter count, ratio to TTT-Linear (Transformer backbone) of that size, and the main dims. Models are "
        "built on the meta device, so this is instant at any size.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size", type=_size, default="125m", help=f"size preset, one of {', '.join(SIZES)}")
    parser.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tttlm models --size {args.size}: parameters matched to TTT-Linear of that size")
    for name, justify in [
        ("arch", "left"),
        ("params", "right"),
        ("vs TTT-Linear", "right"),
        ("hidden", "right"),
        ("layers", "right"),
        ("MLP width", "right"),
        ("mixer", "left"),
        ("implementation", "left"),
    ]:
        table.add_column(name, justify=justify)
    for row in table_rows(args.size):
        table.add_row(
            row["arch"],
            f"{row['params'] / 1e6:,.2f}M",
            f"{row['ratio']:.3f}",
            str(row["hidden"]),
            str(row["layers"]),
            "-" if row["mlp"] is None else str(row["mlp"]),
            row["details"],
            row["implementation"],
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)
    return 0


def describe(arch: str, size: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """One row of ``tttlm models``: parameter count, ratio to the reference, and the main dims of ``arch``."""
    config = make_config(arch, size, **overrides)  # validates arch, size and overrides
    spec = ARCHS[arch]
    params = count_parameters(config, spec.model_class)
    reference = count_parameters(reference_config(size, **overrides), TTTForCausalLM)
    has_mlp = not isinstance(config, (MambaLMConfig, Mamba2LMConfig))
    return {
        "arch": arch + (f" ({overrides['backbone']})" if "backbone" in overrides else ""),
        "params": params,
        "ratio": params / reference,
        "hidden": config.hidden_size,
        "layers": config.num_hidden_layers,
        "mlp": config.intermediate_size if has_mlp else None,
        "details": _details(config),
        "implementation": spec.summary,
    }


def _details(config: PretrainedConfig) -> str:
    if isinstance(config, TTTConfig):
        return f"{config.num_attention_heads} heads, b={config.mini_batch_size}, backbone={config.backbone}"
    if isinstance(config, E2EConfig):
        return (
            f"{config.num_attention_heads} heads, window={config.sliding_window}, b={config.mini_batch_size}, "
            f"{config.num_updated_layers} updated blocks (prime {config.prime_intermediate_size}, static "
            f"{config.updated_intermediate_size})"
        )
    if isinstance(config, LlamaConfig):
        return f"{config.num_attention_heads} heads"
    if isinstance(config, StackConfig):
        kinds = [m for mixers in config.layer_mixers for m in mixers]
        parts = [f"{config.num_attention_heads} heads"]
        if "sliding_attention" in kinds:
            parts.append(f"window={config.sliding_window}")
        if "full_attention" in kinds and "sliding_attention" in kinds:
            parts.append(f"full attention in {kinds.count('full_attention')} layers")
        if "gated_deltanet" in kinds:
            parts = [f"{config.gdn_num_heads} heads × dk {config.gdn_head_dim}, dv {config.gdn_expand_v}×dk"]
        if "ttt" in kinds:
            parts.append(f"TTT-{config.ttt_layer_type} b={config.ttt_mini_batch_size}")
        return ", ".join(parts)
    if isinstance(config, Mamba2LMConfig):
        return f"state {config.state_size}, {config.num_heads} heads × {config.head_dim}, expand {config.expand}"
    return f"state {config.state_size}, d_inner {config.intermediate_size}"


def table_rows(size: str = "125m") -> list[dict[str, Any]]:
    """``describe`` for every arch, the TTT archs with both backbones."""
    rows = []
    for arch in ARCHS:
        if arch in ("ttt-linear", "ttt-mlp"):
            rows.extend(describe(arch, size, backbone=backbone) for backbone in ("transformer", "mamba"))
        else:
            rows.append(describe(arch, size))
    return rows
