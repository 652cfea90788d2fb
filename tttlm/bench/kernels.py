"""``tttlm bench kernels``: one sequence-mixing layer at the paper's sizes, prefill, training and decode.

Rows: TTT-Linear and TTT-MLP layers with the fused Triton kernels (``form="triton"``) and the PyTorch dual form,
causal self-attention (``tttlm.layers.attention``: one ``scaled_dot_product_attention(is_causal=True)`` call for
a prefill, FlashAttention on a GPU in 16-bit) and a Mamba mixer (transformers' ``MambaMixer``: its CUDA kernels
when ``mamba-ssm``/``causal-conv1d`` are installed, else its PyTorch scan). Widths and heads come from the
``TTTConfig`` presets (125m: 768 wide, 12 heads; 1.3b: 2048, 32 heads; head dim 64); Mamba takes the same width
with the library's defaults (expand 2, state 16, conv 4).

Modes, each timed as the median of ``repeats`` calls after ``warmup`` (CUDA synchronised):
- ``prefill``: a forward over ``context`` tokens without autograd (latency per call);
- ``train``: forward + backward over ``context`` tokens (latency per call);
- ``decode``: after a prefill of ``decode_context`` tokens, one token per call for each batch size (tokens/s =
  batch / median step time). A TTT or Mamba step costs the same after any context; attention reads its KV cache.

Triton rows need a CUDA GPU: without one they are recorded as skipped (the interpreter's timings mean nothing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from tttlm.bench.records import CaseProgress, RecordsFile
from tttlm.ops.kernel_forms import triton_installed

LAYERS = ("ttt-linear", "ttt-mlp", "attention", "mamba")
TTT_FORMS = ("triton", "dual")
MODES = ("prefill", "train", "decode")
NEEDS_GPU = "triton numbers need a CUDA GPU"

# defaults: the sweep on a GPU; a small one that finishes in minutes on a CPU
GPU_DEFAULTS = {
    "sizes": ["125m", "1.3b"],
    "contexts": [2048, 4096, 8192, 16384, 32768],
    "batches": [1, 4, 16, 64],
    "decode_context": 2048,
    "tokens": 32,
    "repeats": 5,
}
CPU_DEFAULTS = {
    "sizes": ["125m"],
    "contexts": [256, 1024],
    "batches": [1, 4],
    "decode_context": 256,
    "tokens": 4,
    "repeats": 2,
}


@dataclass(frozen=True)
class KernelRecord:
    """One measurement. ``seconds``: median per call (prefill/train) or per decode step; None when skipped."""

    mode: str
    layer: str
    form: str
    size: str
    context: int
    batch: int
    seconds: float | None
    tokens_per_second: float | None
    min_seconds: float | None
    max_seconds: float | None
    repeats: int
    device: str
    dtype: str
    skipped: str | None = None


def layer_dims(size: str) -> tuple[int, int, int]:
    """(hidden, heads, mini-batch size) of a ``TTTConfig`` preset."""
    from tttlm.models.ttt.configuration import TTTConfig

    config = TTTConfig.from_preset(size)
    return config.hidden_size, config.num_attention_heads, config.mini_batch_size


class _Mamba(nn.Module):
    """transformers' ``MambaMixer`` behind the ``layer(x, cache) -> (y, cache)`` call of the other layers."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        from transformers import MambaConfig
        from transformers.models.mamba.modeling_mamba import MambaMixer

        self.config = MambaConfig(hidden_size=hidden, num_hidden_layers=1, state_size=16, expand=2, conv_kernel=4)
        self.mixer = MambaMixer(self.config, layer_idx=0)

    def forward(self, x: Tensor, cache: Any = None) -> tuple[Tensor, Any]:
        if cache is None and not torch.is_grad_enabled():
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
        from tttlm.models.ssm.modeling import library_cache_argument

        return self.mixer(x, **library_cache_argument(type(self.mixer).forward, cache)), cache


def mamba_path() -> str:
    """Which Mamba implementation transformers will run: its CUDA kernels or the PyTorch scan."""
    import importlib.util

    fast = all(importlib.util.find_spec(m) is not None for m in ("mamba_ssm", "causal_conv1d"))
    return "cuda-kernels" if fast and torch.cuda.is_available() else "torch-scan"


def build_layer(layer: str, size: str, form: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    hidden, heads, mini_batch = layer_dims(size)
    if layer in ("ttt-linear", "ttt-mlp"):
        from tttlm.layers import TTTMLP, TTTLinear

        cls = TTTLinear if layer == "ttt-linear" else TTTMLP
        module: nn.Module = cls(hidden, heads, mini_batch_size=mini_batch, form=form)
    elif layer == "attention":
        from tttlm.layers.attention import Attention

        module = Attention(hidden, heads)
    elif layer == "mamba":
        module = _Mamba(hidden)
    else:
        raise ValueError(f"layer must be one of {LAYERS}; got {layer!r}")
    return module.to(device=device, dtype=dtype)


def _forms(layer: str, forms: Sequence[str]) -> list[str]:
    if layer in ("ttt-linear", "ttt-mlp"):
        return list(forms)
    return ["sdpa"] if layer == "attention" else [mamba_path()]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return samples


def _measure(
    mode: str,
    module: nn.Module,
    hidden: int,
    context: int,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
    tokens: int,
    generator: torch.Generator,
) -> list[float]:
    """Seconds per call (prefill/train) or per decode step (decode)."""

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    if mode == "prefill":
        x = randn(batch, context, hidden)

        def prefill() -> None:
            with torch.no_grad():
                module(x)

        return _time(prefill, device, repeats, warmup)
    if mode == "train":
        x = randn(batch, context, hidden).requires_grad_()
        grad = randn(batch, context, hidden)

        def train() -> None:
            module.zero_grad(set_to_none=True)
            x.grad = None
            module(x)[0].backward(grad)

        return _time(train, device, repeats, warmup)
    with torch.no_grad():
        _, cache = module(randn(batch, context, hidden))
        steps = [randn(batch, 1, hidden) for _ in range(warmup + tokens)]
        samples = []
        for i, x in enumerate(steps):
            _sync(device)
            start = time.perf_counter()
            _, cache = module(x, cache)
            _sync(device)
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    return samples


def _skip_reason(layer: str, form: str, mode: str, device: torch.device) -> str | None:
    if layer == "mamba" and mode == "train" and form != "cuda-kernels":
        # measured: 116 s for one forward+backward over 1024 tokens at 125m on a CPU core
        return "Mamba training without the mamba-ssm/causal-conv1d kernels (transformers' reference path is too slow)"
    if form != "triton":
        return None
    if device.type != "cuda":
        return f"{NEEDS_GPU} (device: {device.type})"
    if not triton_installed():
        return "triton is not installed (pip install triton)"
    return None


def run_kernels_bench(
    sizes: Sequence[str],
    layers: Sequence[str] = LAYERS,
    forms: Sequence[str] = TTT_FORMS,
    modes: Sequence[str] = MODES,
    contexts: Sequence[int] = (2048,),
    batches: Sequence[int] = (1,),
    decode_context: int = 2048,
    prefill_batch: int = 1,
    tokens: int = 32,
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    progress: bool = True,
    out: RecordsFile | None = None,
) -> list[KernelRecord]:
    """Measure every (size, layer, form, mode, context or batch) case. Failures (e.g. out of memory) and triton
    rows without a GPU are recorded as skipped, with the reason, instead of stopping the run. Each record goes
    to ``out`` as soon as its case has finished; ``progress``: show a bar and a line per case."""
    device = torch.device(device)
    dtype_name = str(dtype).removeprefix("torch.")
    cases = []
    for size in sizes:
        for layer in layers:
            for form in _forms(layer, forms):
                for mode in modes:
                    if mode == "decode":
                        points = [(decode_context, b) for b in batches]
                    else:
                        points = [(c, prefill_batch) for c in contexts]
                    cases += [(size, layer, form, mode, c, b) for c, b in points]
    records: list[KernelRecord] = []
    modules: dict[tuple[str, str, str], nn.Module] = {}
    generator = torch.Generator().manual_seed(seed)
    with CaseProgress("bench kernels", len(cases), out, enabled=progress) as bar:
        for size, layer, form, mode, context, batch in cases:
            bar.start(f"{layer} {form} {size} {mode} T={context} B={batch}")
            skipped = _skip_reason(layer, form, mode, device)
            samples: list[float] = []
            if skipped is None:
                try:
                    key = (size, layer, form)
                    if key not in modules:
                        torch.manual_seed(seed)
                        modules.clear()  # one model on the device at a time
                        modules[key] = build_layer(layer, size, form, device, dtype)
                    module = modules[key].train(mode == "train")
                    hidden = layer_dims(size)[0]
                    count = 1 if mode == "decode" else repeats
                    samples = _measure(
                        mode, module, hidden, context, batch, device, dtype, count, warmup, tokens, generator
                    )
                except (RuntimeError, ValueError) as error:  # out of memory, unsupported shape, ...
                    skipped = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            if samples:
                median = statistics.median(samples)
                tokens_done = batch if mode == "decode" else batch * context
                record = KernelRecord(
                    mode, layer, form, size, context, batch, median, tokens_done / median,
                    min(samples), max(samples), len(samples), device.type, dtype_name,
                )  # fmt: skip
            else:
                record = KernelRecord(
                    mode, layer, form, size, context, batch, None, None, None, None, 0, device.type, dtype_name,
                    skipped,
                )  # fmt: skip
            records.append(record)
            result = f"skipped: {record.skipped}" if record.seconds is None else f"{1e3 * record.seconds:.3g} ms"
            bar.done([asdict(record)], result)
    return records


def print_table(records: Sequence[KernelRecord], console: Console | None = None) -> None:
    """One row per measurement: ms per call / step and tokens per second."""
    table = Table(title="Sequence-mixing layers: median latency (ms) and throughput (tokens/s)")
    for col in ("size", "mode", "layer", "form", "T", "B", "ms", "tokens/s"):
        table.add_column(col, justify="left" if col in ("size", "mode", "layer", "form") else "right")
    reasons: dict[str, int] = {}
    for r in records:
        if r.seconds is None:
            reasons[str(r.skipped)] = reasons.get(str(r.skipped), 0) + 1
            cells = ["skipped", "-"]
        else:
            cells = [f"{1e3 * r.seconds:.2f}", f"{r.tokens_per_second:,.0f}"]
        table.add_row(r.size, r.mode, r.layer, r.form, str(r.context), str(r.batch), *cells)
    console = console or Console()
    console.print(table)
    for reason, count in reasons.items():
        console.print(f"skipped {count} row{'s' if count > 1 else ''}: {reason}")


def plot(records: Sequence[KernelRecord], path: Path) -> None:
    """One row of panels per size: prefill and training latency vs context (log-log), decode tokens/s vs batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.seconds is not None]
    sizes = list(dict.fromkeys(r.size for r in records))
    modes = [m for m in MODES if any(r.mode == m for r in records)]
    fig, axes = plt.subplots(len(sizes), len(modes), figsize=(5 * len(modes), 4 * len(sizes)), squeeze=False)
    for i, size in enumerate(sizes):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            rows = [r for r in done if r.size == size and r.mode == mode]
            for layer, form in dict.fromkeys((r.layer, r.form) for r in rows):
                line = sorted(
                    (r for r in rows if (r.layer, r.form) == (layer, form)), key=lambda r: (r.context, r.batch)
                )
                if mode == "decode":
                    ax.plot(
                        [r.batch for r in line], [r.tokens_per_second for r in line], "o-", label=f"{layer} ({form})"
                    )
                else:
                    ax.plot([r.context for r in line], [1e3 * r.seconds for r in line], "o-", label=f"{layer} ({form})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            if mode == "decode":
                context = rows[0].context if rows else 0
                ax.set(title=f"{size}: decode after {context} tokens", xlabel="batch", ylabel="tokens / s")
            else:
                what = "prefill (forward)" if mode == "prefill" else "training (forward + backward)"
                ax.set(title=f"{size}: {what}", xlabel="context (tokens)", ylabel="ms per call")
            if rows:
                ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    device = records[0].device if records else "?"
    fig.suptitle(f"tttlm bench kernels ({device}, {records[0].dtype if records else ''})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ command line


def add_bench_kernels_command(benches: Any) -> None:
    """Register ``tttlm bench kernels`` on the ``bench`` sub-parsers."""
    import argparse

    from tttlm.argtypes import choice_list, int_list
    from tttlm.models.ttt.configuration import PRESETS

    parser = benches.add_parser(
        "kernels",
        help="TTT layers (triton and dual) vs SDPA attention and Mamba: prefill, training, decode tokens/s",
        description="Time one sequence-mixing layer at preset sizes: prefill latency vs context, training "
        "(forward+backward) latency vs context and decode tokens/s vs batch. Defaults depend on the device: the "
        f"full sweep on a GPU (contexts {GPU_DEFAULTS['contexts']}, sizes {GPU_DEFAULTS['sizes']}), a small one "
        f"on a CPU (contexts {CPU_DEFAULTS['contexts']}, sizes {CPU_DEFAULTS['sizes']}). Triton rows need a GPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/kernels.json"), help="records")
    parser.add_argument("--png", type=Path, default=Path("bench-results/kernels.png"), help="figure")
    parser.add_argument("--sizes", type=choice_list(tuple(PRESETS)), default=None, help="presets (layer widths)")
    parser.add_argument("--layers", type=choice_list(LAYERS), default=list(LAYERS), help="layers to time")
    parser.add_argument("--forms", type=choice_list(TTT_FORMS), default=list(TTT_FORMS), help="TTT op forms")
    parser.add_argument("--modes", type=choice_list(MODES), default=list(MODES), help="what to time")
    parser.add_argument("--contexts", type=int_list, default=None, help="prefill/training lengths")
    parser.add_argument("--batches", type=int_list, default=None, help="decode batch sizes")
    parser.add_argument("--decode-context", type=int, default=None, help="tokens prefilled before decoding")
    parser.add_argument("--prefill-batch", type=int, default=1, help="batch of the prefill/training rows")
    # dests differ from --tokens/--repeats of the other benches: ``tttlm.cli.main`` checks those as integers
    parser.add_argument(
        "--tokens", dest="decode_tokens", type=int, default=None, help="timed decode steps (median reported)"
    )
    parser.add_argument(
        "--repeats", dest="timed_repeats", type=int, default=None, help="timed calls per prefill/training case"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls (or decode steps) before timing")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: bfloat16 on cuda"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.set_defaults(func=_bench_kernels)


def _bench_kernels(args: Any) -> int:
    import sys

    from tttlm.bench.records import RecordsFile

    def fail(message: str) -> int:
        print(f"tttlm bench kernels: error: {message}", file=sys.stderr)
        return 2

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda but no CUDA GPU is available")
    defaults = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    given = {
        "sizes": args.sizes,
        "contexts": args.contexts,
        "batches": args.batches,
        "decode_context": args.decode_context,
        "tokens": args.decode_tokens,
        "repeats": args.timed_repeats,
    }
    pick = {name: value if given[name] is None else given[name] for name, value in defaults.items()}
    positive = {
        "decode-context": pick["decode_context"],
        "tokens": pick["tokens"],
        "repeats": pick["repeats"],
        "prefill-batch": args.prefill_batch,
    }
    for name, value in positive.items():
        if value < 1:
            return fail(f"--{name} must be >= 1; got {value}")
    if args.warmup < 0:
        return fail(f"--warmup must be >= 0; got {args.warmup}")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if "triton" in args.forms and device.type != "cuda" and any(x.startswith("ttt") for x in args.layers):
        print(f"note: {NEEDS_GPU}; there is none here, so the triton rows are recorded as skipped")
    with RecordsFile("kernels", args.json, args.argv) as out:
        records = run_kernels_bench(
            sizes=pick["sizes"],
            layers=args.layers,
            forms=args.forms,
            modes=args.modes,
            contexts=pick["contexts"],
            batches=pick["batches"],
            decode_context=pick["decode_context"],
            prefill_batch=args.prefill_batch,
            tokens=pick["tokens"],
            repeats=pick["repeats"],
            warmup=args.warmup,
            device=device,
            dtype=dtype,
            out=out,
        )
    print_table(records)
    out.finish()
    plot(records, args.png)
    print(f"wrote {args.png}")
    return 0
