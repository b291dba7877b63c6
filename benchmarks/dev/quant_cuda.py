"""The CUDA quantizers of the mma.sync attention path (csrc/fused/), timed alone, B=4 H=32 bf16.

Rows per (L, D):
  fused        sageattention::quant_mma_operands (what api._cuda_quantize calls): 3 launches
  one_by_one   mean_over_tokens + quant_per_thread_int8 (Q, K) + quant_v_fp8_operand: 5 launches,
               4 op calls (the previous host path; same kernels, same bytes: checked first)
  k_mean, q_int8, k_int8, v_fp8   each single op alone
GPU time: triton.testing.do_bench (median, L2 flushed). GB/s: the bytes each must move (Q read once,
K and V twice by the fused op, every output written once) over that time. Host: wall time per call
over 50 calls without synchronizing (150-250 launches: below the launch queue, so the host never
waits for the GPU), after a warm-up.

    python benchmarks/dev/quant_cuda.py [--lens 1024,4096,16384] [--hd 64,128]
"""

from __future__ import annotations

import argparse
import time

import torch
import triton

from sageattention import _ops, api

B, H = 4, 32


def host_us(fn, calls: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    return host


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lens", default="1024,4096,16384")
    p.add_argument("--hd", default="128,64")
    args = p.parse_args()
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | B={B} H={H} bf16 HND, per_thread, fp32+fp16")
    print(f"{'L':>6} {'D':>4} {'row':>11} {'GPU ms':>8} {'GB/s':>7} {'host us':>8}")
    for d in (int(x) for x in args.hd.split(",")):
        for n in (int(x) for x in args.lens.split(",")):
            q, k, v = (torch.randn(B, H, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            pre = d**-0.5 * 1.4426950408889634
            elems = B * H * n * d
            fused = lambda: _ops.quant_mma_operands(  # noqa: E731
                q, k, v, pre_scale=pre, q_groups_per_warp=8, k_groups_per_warp=4, scale_max=2.25, head_dim_out=d)

            def one_by_one():
                k_mean = _ops.mean_over_tokens(k)
                qi, qs = _ops.quant_per_thread_int8(q, block=128, warp=16, groups_per_warp=8, pre_scale=pre)
                ki, ks = _ops.quant_per_thread_int8(k, block=64, warp=64, groups_per_warp=4, mean=k_mean)
                vo, vs, _ = _ops.quant_v_fp8_operand(v, scale_max=2.25)
                return qi, qs, ki, ks, k_mean, vo, vs, None

            got, want = fused(), one_by_one()
            for a, b in zip(got, want):
                if a is not None and not torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                                                     b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b):
                    raise SystemExit(f"L={n} D={d}: the fused op differs from the single ops")
            k_mean = want[4]
            rows = {
                # bytes: 2 per input element read, 1 per int8/fp8 element written
                "fused": (fused, elems * (2 * 5 + 3)),
                "one_by_one": (one_by_one, elems * (2 * 5 + 3)),
                "k_mean": (lambda: _ops.mean_over_tokens(k), elems * 2),
                "q_int8": (lambda: _ops.quant_per_thread_int8(q, block=128, warp=16, groups_per_warp=8,
                                                              pre_scale=pre), elems * 3),
                "k_int8": (lambda: _ops.quant_per_thread_int8(k, block=64, warp=64, groups_per_warp=4, mean=k_mean),
                           elems * 3),
                "v_fp8": (lambda: _ops.quant_v_fp8_operand(v, scale_max=2.25), elems * 5),
            }
            for name, (fn, nbytes) in rows.items():
                ms = triton.testing.do_bench(fn, warmup=25, rep=100)
                print(f"{n:>6} {d:>4} {name:>11} {ms:8.3f} {nbytes / ms / 1e6:7.0f} {host_us(fn):8.1f}")
            # The whole quantization step of the public function (api._cuda_quantize, no checks).
            step = lambda: api._cuda_quantize(  # noqa: E731
                q, k, v, tensor_layout="HND", qk_quant_gran="per_thread", sm_scale=d**-0.5, pv_accum_dtype="fp32+fp16",
                smooth_k=True, smooth_v=False, pv="fp8", d=d, d_pad=d)
            print(f"{n:>6} {d:>4} {'api_step':>11} {triton.testing.do_bench(step, warmup=25, rep=100):8.3f} "
                  f"{'':>7} {host_us(step):8.1f}")


if __name__ == "__main__":
    main()
