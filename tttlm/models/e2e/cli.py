"""``tttlm e2e-init --from DIR OUT``: a TTT-E2E model directory from a pretrained Llama-family model
(``models/e2e/from_pretrained.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tttlm.argtypes import non_negative_float, positive_int, probability


def _e2e_init(args: argparse.Namespace) -> int:
    from tttlm.data.io import apply_umask_below
    from tttlm.models.e2e.from_pretrained import copy_tokenizer, e2e_from_pretrained

    try:
        model = e2e_from_pretrained(
            args.source,
            window=args.window,
            mini_batch_size=args.mini_batch,
            updated_fraction=args.updated_fraction,
            prime_init=args.prime_init,
            inner_lr=args.inner_lr,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"tttlm e2e-init: error: {error}", file=sys.stderr)
        return 2
    model.save_pretrained(args.output)
    copy_tokenizer(args.source, args.output)
    apply_umask_below(args.output)
    config = model.config
    print(
        f"wrote {args.output}: ttt-e2e from {args.source} ({sum(p.numel() for p in model.parameters()):,} parameters; "
        f"window {config.sliding_window}, b = {config.mini_batch_size}, blocks {config.first_updated_layer}-"
        f"{config.num_hidden_layers - 1} updated, prime MLPs from the {args.prime_init} init)"
    )
    return 0


def add_e2e_init_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tttlm e2e-init`` on the top-level sub-command parser."""
    parser = commands.add_parser(
        "e2e-init",
        help="turn a pretrained Llama/Mistral/Qwen2/Qwen3 checkpoint into a TTT-E2E model directory",
        description="Reads a save_pretrained directory (config.json + safetensors) of LlamaForCausalLM, "
        "MistralForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM and writes a ttt-e2e model: its attention with a "
        "sliding window, its MLPs, norms and head, and prime MLPs in the last blocks. With the inner lr at 0 the new "
        "model equals the source on inputs shorter than the window. Meta-learn it next: tttlm train --config "
        "configs/e2e-from-pretrained.yaml --init-from OUT.",
    )
    parser.add_argument("--from", dest="source", type=Path, required=True, help="the pretrained model directory")
    parser.add_argument("output", type=Path, help="where to write the ttt-e2e model")
    parser.add_argument("--window", type=positive_int, default=8192, help="sliding window k (default 8192)")
    parser.add_argument("--mini-batch", type=positive_int, default=1024, help="inner mini-batch b (default 1024)")
    parser.add_argument(
        "--updated-fraction",
        type=probability,
        default=0.25,
        help="fraction of the blocks, from the top, that learn at test time (default 0.25, the release's)",
    )
    parser.add_argument(
        "--prime-init",
        choices=("mlp", "zero"),
        default="mlp",
        help="mlp: the block's MLP becomes the prime MLP and the static MLP starts at zero output (default); zero: "
        "the prime MLP starts as a copy with a zero output projection",
    )
    parser.add_argument(
        "--inner-lr",
        type=non_negative_float,
        default=1.0,
        help="the inner SGD step size (default 1, the release's; 0: no test-time training, the source with a window)",
    )
    parser.set_defaults(func=_e2e_init)
