"""The two ceilings of an attention kernel on this GPU, measured with PyTorch's own kernels.

* Copy bandwidth: a device-to-device copy of a large buffer (read + write bytes / time).
* Matmul rates: FP8 e4m3 (``torch._scaled_mm``), INT8 (``torch._int_mm``) and bf16 (``torch.mm``)
  on large square GEMMs (2·M·N·K / time).

The attention kernels' TOPS (4·B·H·L²·D per call) compare directly with the matmul rates: both
of their matmuls run at the FP8/INT8 rate. Usage: ``python benchmarks/dev/ceilings.py``.
"""

from __future__ import annotations

import torch
from triton.testing import do_bench


def copy_bandwidth_gbs(n_bytes: int = 4 << 30) -> float:
    src = torch.empty(n_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=500)
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def matmul_tflops(kind: str, n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    if kind == "fp8":
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.to(torch.float8_e4m3fn).t()  # _scaled_mm wants B column-major
        one = torch.ones((), device="cuda")
        fn = lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)  # noqa: E731
    elif kind == "int8":
        ai = a.clamp(-127, 127).to(torch.int8)
        bi = b.clamp(-127, 127).to(torch.int8)
        fn = lambda: torch._int_mm(ai, bi)  # noqa: E731
    else:
        ab, bb = a.bfloat16(), b.bfloat16()
        fn = lambda: torch.mm(ab, bb)  # noqa: E731
    ms = do_bench(fn, warmup=50, rep=500)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def main() -> None:
    print(f"# {torch.cuda.get_device_name(0)} | torch {torch.__version__} | CUDA {torch.version.cuda}")
    print(f"copy bandwidth (4 GiB device-to-device): {copy_bandwidth_gbs():.0f} GB/s")
    for kind in ("fp8", "int8", "bf16"):
        print(f"{kind} GEMM 8192^3: {matmul_tflops(kind):.0f} TFLOPS")


if __name__ == "__main__":
    main()
