"""Compile the Triton attention kernel for sm_90a without a GPU and show how its KV loop is scheduled.

Why: issue 4's FP8 Triton target (650 TOPS end to end at 16K) is missed by a few percent while our
hand-written sm90 kernel, same algorithm, reaches 764-783 kernel only. This prints the order of
the loop's tensor-core instructions and their waits in the SASS: whether S = Q·Kᵀ (IGMMA) and
P·V (QGMMA / HGMMA) are waited for right after they are issued (``WARPGROUP.DEPBAR.LE gsb0, 0x0``),
i.e. whether the softmax can overlap any matmul, and how the TMA loads are synchronized.

    python benchmarks/dev/triton_sass.py [--pv fp8|fp16] [--config 64,128,4,3] [--head-dim 128] [--pointer-loads]

Uses the Triton installed here (the lent H100 has 3.6; this machine 3.8) and its bundled nvdisasm.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sageattention.triton.attn_qk_int8_pv_fp16 import (
    FP8_P_LOG2_SCALE,
    PV_FP8,
    PV_FP32_ACCUM,
    _attn_qk_int8_kernel,
)

POINTERS = {"Q": "*i8", "K": "*i8", "Q_SCALE": "*fp32", "K_SCALE": "*fp32", "V_SCALE": "*fp32",
            "OUT": "*bf16", "LSE": "*fp32", "CU_Q": "*i32", "CU_K": "*i32"}
EVENTS = re.compile(r"(IGMMA|QGMMA|HGMMA)\S*|WARPGROUP\.DEPBAR\S*\s+\S+\s+\S+|UTMALDG\S*|BAR\.SYNC\S*|MUFU\.EX2")


def nvdisasm() -> str:
    """Triton's own copy (it ships ptxas, cuobjdump and nvdisasm), else the CUDA toolkit's."""
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    for candidate in (str(bundled), shutil.which("nvdisasm"),
                      os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvdisasm")):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.exit("nvdisasm not found: install the CUDA toolkit or set CUDA_HOME")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pv", choices=("fp8", "fp16"), default="fp8")
    parser.add_argument("--config", default="64,128,4,3", help="BLOCK_M,BLOCK_N,WARPS,STAGES")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--pointer-loads", action="store_true", help="the pre-sm90 load path instead of TMA")
    args = parser.parse_args()
    block_m, block_n, warps, stages = (int(x) for x in args.config.split(","))
    fp8 = args.pv == "fp8"
    fn = _attn_qk_int8_kernel.fn
    const = {
        "HEAD_DIM": args.head_dim, "IS_CAUSAL": False, "PV_MODE": PV_FP8 if fp8 else PV_FP32_ACCUM,
        "IS_VARLEN": False, "RETURN_LSE": False, "INTERPRET_FP8": False,
        "P_LOG2_SCALE": FP8_P_LOG2_SCALE if fp8 else 0.0, "USE_TMA": not args.pointer_loads,
        "V_TRANSPOSED": fp8 and not args.pointer_loads, "BLOCK_M": block_m, "BLOCK_N": block_n,
    }
    pointers = dict(POINTERS, V="*fp8e4nv" if fp8 else "*fp16")
    signature = {n: "constexpr" if n in const else pointers.get(n, "i32") for n in fn.arg_names}
    source = ASTSource(fn=fn, signature=signature, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        sass = subprocess.run([nvdisasm(), str(cubin)], capture_output=True, text=True, check=True).stdout
    print(f"triton {triton.__version__}, sm_90a, {args.pv} P·V, hd{args.head_dim}, config {args.config}, "
          f"{'pointer' if args.pointer_loads else 'TMA'} loads, shared memory {kernel.metadata.shared} B")
    # The event sequence with runs of MUFU.EX2 collapsed: the loop body shows as the last
    # IGMMA ... QGMMA/HGMMA group before the epilogue.
    events, run = [], 0
    for line in sass.splitlines():
        m = EVENTS.search(line)
        if not m:
            continue
        token = m.group(0).split(" ;")[0]
        if token == "MUFU.EX2":
            run += 1
            continue
        if run:
            events.append(f"{run} x MUFU.EX2")
            run = 0
        events.append(re.sub(r"\s+", " ", token))
    if run:
        events.append(f"{run} x MUFU.EX2")
    print("\n".join(events))


if __name__ == "__main__":
    main()
