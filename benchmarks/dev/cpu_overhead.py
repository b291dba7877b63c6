"""Host-side cost per call of the public functions (what dominates at short sequences).

Launches N calls back to back without synchronizing, so with a GPU that keeps up the wall time
per call is the Python + launch overhead; then prints a cProfile of the slowest one.

    python benchmarks/dev/cpu_overhead.py [--seqlen 1024] [--calls 200]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

import sageattention

IMPLS = ("sageattn", "sageattn_qk_int8_pv_fp8_triton", "sageattn_qk_int8_pv_fp16_triton",
         "sageattn_qk_int8_pv_fp8_cuda_sm90", "sageattn_qk_int8_pv_fp16_cuda")


def per_call_ms(fn, args, calls):
    for _ in range(5):
        fn(*args)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    host = (time.perf_counter() - start) / calls * 1e3
    torch.cuda.synchronize()
    total = (time.perf_counter() - start) / calls * 1e3
    return host, total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seqlen", type=int, default=1024)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    q, k, v = (torch.randn(4, 32, args.seqlen, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    worst = None
    for name in IMPLS:
        fn = getattr(sageattention, name)
        try:
            host, total = per_call_ms(fn, (q, k, v), args.calls)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"{name:36s} unavailable: {exc}")
            continue
        print(f"{name:36s} host {host:7.3f} ms/call   host+GPU {total:7.3f} ms/call")
        if worst is None or host > worst[1]:
            worst = (name, host)
    if worst:
        fn = getattr(sageattention, worst[0])
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            fn(q, k, v)
        prof.disable()
        torch.cuda.synchronize()
        print(f"\ncProfile of 50 calls of {worst[0]}:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
