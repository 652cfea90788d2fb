"""``tttlm models``: the registry's architectures at one size, with parameter counts (built on the meta device),
their block pattern, widths, heads and window, and the source of each choice (``--json``: one record per arch)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from transformers import LlamaConfig, PretrainedConfig

from tttlm.models.e2e.configuration import E2EConfig
from tttlm.models.provenance import LETTER_MEANINGS, SOURCES, layer_pattern
from tttlm.models.registry import (
    ARCHS,
    MATCH_REFERENCES,
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
    parser.add_argument(
        "--match-params",
        choices=MATCH_REFERENCES,
        default=None,
        help="solve each arch's width to match this model's parameter count (default: the papers' widths)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON: the layer-pattern letters and one record per arch (arch, size, layer_pattern, widths, "
        "heads, head_dims, window, params, sources)",
    )
    parser.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = table_rows(args.size, match_params=args.match_params)
    if args.json:
        record = {"size": args.size, "match_params": args.match_params, "letters": LETTER_MEANINGS, "archs": rows}
        print(json.dumps(record, indent=2))
        return 0

    widths = f"parameters matched to {args.match_params}" if args.match_params else "the papers' widths"
    table = Table(title=f"tttlm models --size {args.size}: {widths}, ratio to TTT-Linear of that size")
    for name, justify in [
        ("arch", "left"),
        ("params", "right"),
        ("vs TTT-Linear", "right"),
        ("hidden", "right"),
        ("layers", "right"),
        ("pattern", "left"),
        ("window", "right"),
        ("MLP width", "right"),
        ("mixer", "left"),
        ("implementation", "left"),
    ]:
        table.add_column(name, justify=justify)
    for row in rows:
        table.add_row(
            row["arch"],
            f"{row['params'] / 1e6:,.2f}M",
            f"{row['ratio']:.3f}",
            str(row["hidden"]),
            str(row["layers"]),
            row["layer_pattern"],
            "-" if row["window"] is None else str(row["window"]),
            "-" if row["mlp"] is None else str(row["mlp"]),
            row["details"],
            row["implementation"],
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)
    console.print("pattern letters: " + ", ".join(f"{k} {v}" for k, v in LETTER_MEANINGS.items()))
    return 0


def describe(arch: str, size: str = "tiny", *, match_params: str | None = None, **overrides: Any) -> dict[str, Any]:
    """One record of ``tttlm models``: parameter count, ratio to the reference, the block pattern, widths, heads,
    head dims and window of ``arch`` (``match_params`` as in ``registry.build``), and the sources of its choices
    (``provenance.SOURCES``)."""
    config = make_config(arch, size, match_params=match_params, **overrides)  # validates arch, size and overrides
    spec = ARCHS[arch]
    params = count_parameters(config)  # the class follows the config (transformer + short_conv is a stack model)
    reference = count_parameters(reference_config(size, **overrides), TTTForCausalLM)
    has_mlp = not isinstance(config, (MambaLMConfig, Mamba2LMConfig))
    return {
        "arch": arch + (f" ({overrides['backbone']})" if "backbone" in overrides else ""),
        "size": size,
        "params": params,
        "ratio": params / reference,
        "hidden": config.hidden_size,
        "layers": config.num_hidden_layers,
        "layer_pattern": layer_pattern(config),
        "mlp": config.intermediate_size if has_mlp else None,
        **_shape(config),
        "details": _details(config),
        "implementation": spec.summary,
        "sources": SOURCES[arch],
    }


def _add_ssd(shape: dict[str, dict[str, int]], hidden: int, expand: int, head_dim: int, state: int) -> None:
    """Widths, heads and head dim of a Mamba-2 (SSD) mixer into ``shape`` (``widths``, ``heads``, ``head_dims``)."""
    shape["widths"]["d_inner"], shape["widths"]["state"] = expand * hidden, state
    shape["heads"]["ssd"], shape["head_dims"]["ssd"] = expand * hidden // head_dim, head_dim


def _shape(config: PretrainedConfig) -> dict[str, Any]:
    """``widths``, ``heads`` and ``head_dims`` per mixer kind, and the attention ``window`` (None: none)."""
    widths: dict[str, int] = {"hidden": config.hidden_size}
    heads: dict[str, int] = {}
    head_dims: dict[str, int] = {}
    window = None
    shape = {"widths": widths, "heads": heads, "head_dims": head_dims}
    if isinstance(config, MambaLMConfig):
        widths["d_inner"], widths["state"] = config.intermediate_size, config.state_size
        return {**shape, "window": None}
    if isinstance(config, Mamba2LMConfig):
        _add_ssd(shape, config.hidden_size, config.expand, config.head_dim, config.state_size)
        return {**shape, "window": None}
    widths["mlp"] = config.intermediate_size
    first = "ttt" if isinstance(config, TTTConfig) else "attention"  # a TTT model's heads are its TTT layers'
    heads[first] = config.num_attention_heads
    head_dims[first] = config.hidden_size // config.num_attention_heads
    if isinstance(config, E2EConfig):
        widths["updated_mlp"], widths["prime_mlp"] = config.updated_intermediate_size, config.prime_intermediate_size
        window = config.sliding_window
    if isinstance(config, StackConfig):
        kinds = {m for mixers in config.layer_mixers for m in mixers}
        if kinds & {"sliding_attention", "lact"}:
            window = config.sliding_window
        if "gated_deltanet" in kinds:
            heads["gdn"], head_dims["gdn_key"] = config.gdn_num_heads, config.gdn_head_dim
            head_dims["gdn_value"] = config.gdn_expand_v * config.gdn_head_dim
            widths["gdn_key"] = config.gdn_num_heads * config.gdn_head_dim
        if "mamba2" in kinds:
            _add_ssd(shape, config.hidden_size, config.mamba2_expand, config.mamba2_head_dim, config.mamba2_state_size)
        if "ttt" in kinds:
            heads["ttt"], head_dims["ttt"] = config.ttt_num_heads, config.hidden_size // config.ttt_num_heads
        if "lact" in kinds:
            heads["lact"], head_dims["lact"] = config.lact_num_heads, config.hidden_size // config.lact_num_heads
            widths["lact_chunk"] = config.lact_chunk_size
        if not kinds & {"sliding_attention", "full_attention", "lact"}:
            del heads["attention"], head_dims["attention"]
    return {"widths": widths, "heads": heads, "head_dims": head_dims, "window": window}


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
        if "mamba2" in kinds:
            parts.append(f"Mamba-2 state {config.mamba2_state_size}, head dim {config.mamba2_head_dim}")
        if "ttt" in kinds:
            parts.append(f"TTT-{config.ttt_layer_type} b={config.ttt_mini_batch_size}")
        if "lact" in kinds:
            parts.append(
                f"LaCT {config.lact_num_heads} fast heads, chunk={config.lact_chunk_size}"
                + (", Muon" if config.lact_use_muon else "")
                + (", momentum" if config.lact_use_momentum else "")
            )
        return ", ".join(parts)
    if isinstance(config, Mamba2LMConfig):
        return f"state {config.state_size}, {config.num_heads} heads × {config.head_dim}, expand {config.expand}"
    return f"state {config.state_size}, d_inner {config.intermediate_size}"


def table_rows(size: str = "125m", *, match_params: str | None = None) -> list[dict[str, Any]]:
    """``describe`` for every arch, the TTT archs with both backbones."""
    rows = []
    for arch in ARCHS:
        if arch in ("ttt-linear", "ttt-mlp"):
            rows.extend(
                describe(arch, size, match_params=match_params, backbone=backbone)
                for backbone in ("transformer", "mamba")
            )
        else:
            rows.append(describe(arch, size, match_params=match_params))
    return rows
