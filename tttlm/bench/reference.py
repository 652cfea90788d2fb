"""``tttlm bench reference``: our TTT layers against ttt-lm-pytorch's, timed in alternating fresh processes.

The comparison a user makes between implementations: one TTT-Linear or TTT-MLP layer of the same shape (a size
preset's width and heads, mini-batch 16, no output gate and no convolutions, as ttt-lm-pytorch's Transformer
backbone), the same float32 input, one torch thread, CPU time of the calling thread. Each round times ours and the
reference's layer, each in a fresh process (so neither inherits the other's allocator state or warm caches), and
the ratio is reference time / our time, per round and as the median of the rounds' ratios.

The reference is the user's own copy of ``ttt.py`` from test-time-training/ttt-lm-pytorch (``--ttt-py PATH``): it
is imported from that path, never shipped with tttlm. Before timing, one process checks that both layers compute
the same function: the reference layer's weights are converted into ours (``tttlm.models.ttt.convert``) and the
outputs compared.

Every record also carries the floor that no implementation of the layer can beat on this machine: the four
(seq × width) × (width × width) projections (q, k, v, output), timed as plain GEMMs in the same process, and the
matmul rate they ran at. ``best_ratio`` = reference time / that floor is the speed-up the inner loop could give at
most if it cost nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from tttlm.argtypes import choice_list
from tttlm.bench.cases import check_positive, in_fresh_process
from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.bench.tables import Record, TextTable, fmt, print_tables
from tttlm.bench.timing import load_1m, time_call
from tttlm.layers.ttt import DEFAULT_BASE_LR, TTTLayer

IMPLS = ("reference", "tttlm")
INNERS = ("linear", "mlp")
MODES = ("forward", "backward")
MINI_BATCH = 16
HEADERS = [
    "layer", "call", "size", "T", "tttlm ms", "reference ms", "speed-up (range)", "projections ms",
    "speed-up if inner were free", "max |diff|",
]  # fmt: skip


def load_reference_module(path: Path) -> ModuleType:
    """ttt-lm-pytorch's ``ttt.py`` imported from ``path`` (it needs transformers, which tttlm depends on)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"--ttt-py {path}: no such file; give the path of ttt.py from a checkout of "
            "test-time-training/ttt-lm-pytorch (tttlm does not ship it)"
        )
    spec = importlib.util.spec_from_file_location("ttt_lm_pytorch_reference", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--ttt-py {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("TTTConfig", "TTTLinear", "TTTMLP"):
        if not hasattr(module, name):
            raise ValueError(f"--ttt-py {path}: has no {name}; is it ttt-lm-pytorch's ttt.py?")
    return module


def preset_shape(size: str) -> tuple[int, int]:
    """(width, heads) of a TTT size preset."""
    from tttlm.models.ttt.configuration import PRESETS

    return PRESETS[size]["hidden_size"], PRESETS[size]["num_attention_heads"]


def reference_layer(module: ModuleType, inner: str, width: int, heads: int) -> nn.Module:
    """The reference's TTT layer as its Transformer backbone builds it: no gate, no convolutions."""
    config = module.TTTConfig(
        hidden_size=width,
        num_attention_heads=heads,
        num_hidden_layers=1,
        ttt_layer_type=inner,
        use_gate=False,
        share_qk=False,
        pre_conv=False,
        mini_batch_size=MINI_BATCH,
        ttt_base_lr=DEFAULT_BASE_LR[inner],  # the reference's default is 1.0 for both; TTT-MLP's paper value is 0.1
    )
    return (module.TTTLinear if inner == "linear" else module.TTTMLP)(config, layer_idx=0)


def our_layer(inner: str, width: int, heads: int) -> nn.Module:
    return TTTLayer(width, heads, inner, mini_batch_size=MINI_BATCH, use_gate=False)


def converted_layer(reference: nn.Module, inner: str, width: int, heads: int) -> nn.Module:
    """Our layer holding the reference layer's weights, renamed and reshaped by the checkpoint converter."""
    from tttlm.models.ttt.configuration import TTTConfig
    from tttlm.models.ttt.convert import convert_reference_state_dict

    ours = our_layer(inner, width, heads)
    prefix = "model.layers.0."
    keys = {f"{prefix}ttt.{key}" for key in ours.state_dict()}
    renamed = convert_reference_state_dict(
        {f"{prefix}seq_modeling_block.{key}": value for key, value in reference.state_dict().items()},
        TTTConfig(hidden_size=width, num_attention_heads=heads, layer_type=inner),
        keys,
    )
    ours.load_state_dict({key.removeprefix(f"{prefix}ttt."): value for key, value in renamed.items()})
    return ours


def _forward(impl: str, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if impl == "reference":
        return layer(x, position_ids=torch.arange(x.shape[1])[None])
    return layer(x)[0]


def check_same_function(ttt_py: Path, inner: str, size: str, seq_len: int) -> float:
    """Max |difference| of the two layers' float32 outputs on one input, ours holding the reference's weights."""
    torch.manual_seed(0)
    width, heads = preset_shape(size)
    reference = reference_layer(load_reference_module(ttt_py), inner, width, heads)
    ours = converted_layer(reference, inner, width, heads)
    x = torch.randn(1, seq_len, width)
    with torch.no_grad():
        return float((_forward("reference", reference, x) - _forward("tttlm", ours, x)).abs().max())


def time_layer(impl: str, ttt_py: Path, inner: str, size: str, seq_len: int, mode: str, repeats: int) -> Record:
    """One process's measurement: the layer's call (forward, or forward + backward of the sum), min and median
    CPU seconds over ``repeats`` after one warm-up, and the four projections' GEMMs timed the same way."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    width, heads = preset_shape(size)
    if impl == "reference":
        layer = reference_layer(load_reference_module(ttt_py), inner, width, heads)
    else:
        layer = our_layer(inner, width, heads)
    x = torch.randn(1, seq_len, width, requires_grad=mode == "backward")

    def call() -> None:
        if mode == "forward":
            with torch.no_grad():
                _forward(impl, layer, x)
        else:
            _forward(impl, layer, x).sum().backward()

    timing = time_call(call, repeats, warmup=1, clock="cpu")
    inputs, weight = torch.randn(seq_len, width), torch.randn(width, width)
    out = torch.empty(seq_len, width)

    def projections() -> None:
        for _ in range(4):
            torch.mm(inputs, weight, out=out)

    # forward + backward: each projection's backward is two GEMMs of the same size (input and weight gradients)
    passes = 1 if mode == "forward" else 3
    floor = passes * time_call(projections, repeats, warmup=1, clock="cpu").minimum
    return {
        "impl": impl,
        "inner": inner,
        "size": size,
        "seq_len": seq_len,
        "mode": mode,
        "min_ms": 1e3 * timing.minimum,
        "median_ms": 1e3 * timing.median,
        "repeats": repeats,
        "projections_ms": 1e3 * floor,
        "projection_gflop_per_s": passes * 4 * 2 * seq_len * width**2 / floor / 1e9,
        "threads": 1,
        "clock": "cpu",
        "load_1m": load_1m(),
    }


def _case(record: Record) -> tuple[Any, ...]:
    return record.get("inner"), record.get("mode"), record.get("size"), record.get("seq_len")


def summarise(records: Sequence[Record]) -> list[Record]:
    """One row per (inner, mode, size, T): the median over rounds of each side's best time, and the speed-up as the
    median of the per-round ratios (each round's two processes ran back to back, so a machine that drifts between
    rounds shifts both sides of a ratio alike)."""
    rows = []
    for case in dict.fromkeys(_case(r) for r in records if "impl" in r):
        same = [r for r in records if "impl" in r and _case(r) == case]
        ours = [r["min_ms"] for r in same if r["impl"] == "tttlm"]
        ref = [r["min_ms"] for r in same if r["impl"] == "reference"]
        if not ours or not ref:
            continue
        ratios = [a / b for a, b in zip(ref, ours, strict=False)]
        floor = statistics.median(r["projections_ms"] for r in same)
        check = [r["max_abs_diff"] for r in records if r.get("check") == case[0]]
        inner, mode, size, seq_len = case
        rows.append({
            "inner": inner, "mode": mode, "size": size, "seq_len": seq_len,
            "tttlm_ms": statistics.median(ours), "reference_ms": statistics.median(ref),
            "ratio": statistics.median(ratios), "ratio_low": min(ratios),
            "ratio_high": max(ratios), "rounds": len(ratios), "projections_ms": floor,
            "best_ratio": statistics.median(ref) / floor, "max_abs_diff": check[0] if check else None,
        })  # fmt: skip
    return rows


def tables(records: Sequence[Record]) -> list[TextTable]:
    """The comparison table of a run's records."""
    table = TextTable(
        "TTT layer vs ttt-lm-pytorch (1 thread, CPU time; times: median over rounds of each process's best call; "
        "speed-up: median of the rounds' ratios)",
        HEADERS,
        left=2,
    )
    for row in summarise(records):
        table.rows.append([
            f"TTT-{row['inner'].upper() if row['inner'] == 'mlp' else 'Linear'}", row["mode"], row["size"],
            str(row["seq_len"]), fmt(row["tttlm_ms"], ".1f"), fmt(row["reference_ms"], ".1f"),
            f"{row['ratio']:.2f}x ({row['ratio_low']:.2f}-{row['ratio_high']:.2f}, {row['rounds']} rounds)",
            fmt(row["projections_ms"], ".1f"), f"{row['best_ratio']:.2f}x", fmt(row["max_abs_diff"], ".1e"),
        ])  # fmt: skip
    return [table]


def run(args: argparse.Namespace) -> None:
    check_positive("--rounds/--repeats/--seq-len", [args.rounds, args.repeats, args.seq_len])
    load_reference_module(args.ttt_py)  # a wrong path fails here, before any process starts
    cases = [(inner, mode) for inner in args.inners for mode in args.modes]
    with (
        RecordsFile("reference", args.json, sys.argv[1:]) as out,
        CaseProgress("ttt-lm-pytorch comparison", len(args.inners) + len(cases) * args.rounds * 2, out) as progress,
    ):
        for inner in args.inners:
            progress.start(f"TTT-{inner}: same function?")
            diff = in_fresh_process(check_same_function, args.ttt_py, inner, args.size, args.seq_len)
            progress.done([{"check": inner, "max_abs_diff": diff}], f"max |ours - reference| = {diff:.1e}")
        for round_ in range(args.rounds):
            for inner, mode in cases:
                for impl in IMPLS:  # alternating: the rounds see the same drift of a shared machine
                    progress.start(f"round {round_ + 1}: {impl} TTT-{inner} {mode}")
                    record = in_fresh_process(
                        time_layer, impl, args.ttt_py, inner, args.size, args.seq_len, mode, args.repeats
                    )
                    progress.done([{**record, "round": round_}], f"{record['min_ms']:.1f} ms")
        print_tables(tables(out.records))
        out.finish()


def add_bench_reference_command(benches: Any) -> None:
    """Register ``tttlm bench reference`` on the ``bench`` sub-parsers."""
    from tttlm.models.ttt.configuration import PRESETS

    parser = benches.add_parser(
        "reference",
        help="our TTT layers vs ttt-lm-pytorch's (your copy of its ttt.py), alternating fresh processes",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ttt-py", type=Path, required=True, help="ttt-lm-pytorch's ttt.py (not shipped with tttlm)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/reference.json"), help="records file")
    parser.add_argument("--inners", type=choice_list(INNERS), default=list(INNERS), help="TTT-Linear and/or TTT-MLP")
    parser.add_argument("--modes", type=choice_list(MODES), default=["forward"], help="forward and/or backward")
    parser.add_argument("--size", choices=tuple(PRESETS), default="125m", help="width and heads of this preset")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens")
    parser.add_argument("--rounds", type=int, default=3, help="alternating pairs of processes per case")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process (after one warm-up)")
    parser.set_defaults(func=run)
