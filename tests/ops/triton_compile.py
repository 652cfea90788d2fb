"""Compile the Triton TTT kernels for real GPUs, ahead of time, on a machine without one.

Triton lowers a kernel to PTX and assembles it to a cubin with its bundled ptxas for any target; no driver is
involved. This catches what the interpreter cannot (types across branches, layouts, shared memory per block).

    python tests/ops/triton_compile.py           # the CI set: d = 32, sm_90, bfloat16 inputs
    python tests/ops/triton_compile.py --all     # d = 32/64/128, sm_80/sm_90, float32 and bfloat16

Must run without TRITON_INTERPRET. Exit status 0: all compiled and fit in shared memory; 1: a failure;
3: this Triton cannot compile for NVIDIA GPUs here (no nvidia backend or ptxas).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("run without TRITON_INTERPRET=1 (the kernels must be defined for the GPU)")

import triton

try:
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the triton build
    print(f"skip: this triton has no NVIDIA backend ({error})")
    sys.exit(3)

from tttlm.ops.triton_common import DOT_PRECISION
from tttlm.ops.ttt_linear import triton as linear
from tttlm.ops.ttt_mlp import triton as mlp

# shared memory per block available to a kernel (opt-in maximum)
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
SCALARS = {"T": "i32", "H": "i32", "P0": "i32", "NM": "i32", "POS": "i32", "eps": "fp32"}
IO = ("q_ptr", "k_ptr", "v_ptr", "out_ptr", "do_ptr", "dq_ptr", "dk_ptr", "dv_ptr", "lr_ptr", "dlr_ptr")


def signature(kernel: object, io_type: str, constexprs: dict[str, object]) -> dict[str, str]:
    sig = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in SCALARS:
            sig[name] = SCALARS[name]
        else:
            sig[name] = io_type if name in IO else "*fp32"
    return sig


def cases(d: int, io: str) -> list[tuple[str, object, dict[str, object], dict[str, int]]]:
    import torch

    prec = DOT_PRECISION[torch.float32 if io == "*fp32" else torch.bfloat16]
    warps = linear.num_warps(d)
    hidden = 4 * d
    mlp_setup = {"num_warps": 8 if d >= 64 else 4, "num_stages": 2 if d <= 32 else 1}
    common = {"D": d, "MB": 16, "BB": 16, "HAS_NORM": True, "PREC": prec}
    return [
        ("linear fwd", linear._linear_fwd_kernel, {**common, "HAS_BIAS": True, "SAVE": True}, {"num_warps": warps}),
        ("linear bwd", linear._linear_bwd_kernel, {**common, "HAS_BIAS": True}, {"num_warps": warps, "num_stages": 1}),
        (
            "linear step",
            linear._linear_step_kernel,
            {"D": d, "HAS_BIAS": True, "HAS_NORM": True, "PENDING": True, "CLOSE": False},
            {"num_warps": warps},
        ),
        (
            "mlp fwd",
            mlp._mlp_fwd_kernel,
            {**common, "HID": hidden, "BH": mlp.hidden_block(hidden, d), "SAVE": True},
            mlp_setup,
        ),
        (
            "mlp bwd",
            mlp._mlp_bwd_kernel,
            {**common, "HID": hidden, "BH": mlp.hidden_block(hidden, d)},
            {**mlp_setup, "num_stages": 1},
        ),
        (
            "mlp step",
            mlp._mlp_step_kernel,
            {"D": d, "HID": hidden, "BH": mlp.hidden_block(hidden, d), "HAS_NORM": True, "PENDING": True}
            | {"CLOSE": True},
            mlp_setup,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every head dim, both architectures, fp32 and bf16")
    args = parser.parse_args()
    dims, archs, ios = ([32, 64, 128], [80, 90], ["*fp32", "*bf16"]) if args.all else ([32], [90], ["*bf16"])
    failed = 0
    for d in dims:
        for arch in archs:
            for io in ios:
                for name, kernel, constexprs, options in cases(d, io):
                    start = time.perf_counter()
                    src = triton.compiler.ASTSource(
                        fn=kernel, signature=signature(kernel, io, constexprs), constexprs=constexprs
                    )
                    try:
                        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
                    except Exception as error:  # report every failure, then fail
                        print(f"FAIL {name} d={d} sm_{arch} {io[1:]}: {type(error).__name__}: {error}")
                        failed += 1
                        continue
                    shared = compiled.metadata.shared
                    fits = shared <= SHARED_LIMIT[arch]
                    failed += not fits
                    print(
                        f"{'ok  ' if fits else 'FAIL'} {name:12s} d={d:<3d} sm_{arch} {io[1:]:4s} "
                        f"shared {shared / 1024:6.1f} KB{'' if fits else ' (too much)'}  "
                        f"{time.perf_counter() - start:5.1f} s"
                    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
