# Development script (provenance of benchmarks/results/h100-dev-2026-11-23/); the official runner is benchmarks/bench_attention.py.
"""Device script: wide config sweep of the shared attention kernel, hd128 non-causal, tuned at L=16K."""
from __future__ import annotations
import os, sys, time
sys.path.insert(0, os.getcwd())
import torch, triton
from triton.testing import do_bench
from sageattention.testing.reference import quant_per_block_int8_ref
from sageattention.testing.emulation import quant_per_channel_fp8_ref
import sageattention.triton.attn_qk_int8_pv_fp16 as M
from sageattention.triton.attn_qk_int8_pv_fp8 import attn_qk_int8_pv_fp8
K = M._attn_qk_int8_kernel
cfg = lambda bm, bn, w, s: triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
WIDE = [cfg(64, 64, 4, s) for s in (2, 3, 4)] + [cfg(64, 128, 4, s) for s in (2, 3)] + \
       [cfg(128, 64, 8, s) for s in (2, 3, 4)] + [cfg(128, 128, 8, s) for s in (2, 3)] + \
       [cfg(128, 64, 4, 3), cfg(128, 128, 4, 2)]
if os.environ.get("SWEEP_SET") == "fp8extra":
    WIDE = [cfg(64, 128, 4, 3), cfg(64, 128, 4, 4), cfg(64, 256, 4, 2), cfg(64, 256, 4, 3), cfg(64, 128, 8, 3), cfg(128, 128, 4, 3)]
B, H = 4, 32
modes = sys.argv[1].split(",") if len(sys.argv) > 1 else ["fp32", "fp8T"]
hd = int(sys.argv[2]) if len(sys.argv) > 2 else 128
causal = bool(int(sys.argv[3])) if len(sys.argv) > 3 else False
def tops(ms, L): return 4 * B * H * L * L * hd / (2 if causal else 1) / (ms * 1e-3) / 1e12
data = {}
for L in (16384, 4096):
    torch.manual_seed(0)
    q = torch.randn(B, H, L, hd, device="cuda", dtype=torch.bfloat16)
    k = torch.randn_like(q); v = torch.randn_like(q)
    qi, qs, ki, ks, _ = quant_per_block_int8_ref(q, k)
    v8, vs = quant_per_channel_fp8_ref(v)
    v8t = v8.transpose(-1, -2).contiguous().transpose(-1, -2)
    data[L] = (qi, qs, ki, ks, v.half(), v8, v8t, vs)
    del q, k, v
for mode in modes:
    for tma in ((True,) if os.environ.get("SWEEP_SET") else (False, True)):
        M.FORCE_TMA = tma
        K.configs = list(WIDE)
        K.cache.clear()
        def fn(L):
            qi, qs, ki, ks, vh, v8, v8t, vs = data[L]
            if mode == "fp32":
                return lambda: M.attn_qk_int8_pv_fp16(qi, ki, vh, qs, ks, is_causal=causal, output_dtype=torch.bfloat16)
            if mode == "fp16acc":
                return lambda: M.attn_qk_int8_pv_fp16(qi, ki, vh, qs, ks, is_causal=causal, pv_accum_dtype="fp16+fp32", output_dtype=torch.bfloat16)
            if mode == "fp8T":
                return lambda: attn_qk_int8_pv_fp8(qi, ki, v8t, qs, ks, vs, is_causal=causal, output_dtype=torch.bfloat16)
            return lambda: attn_qk_int8_pv_fp8(qi, ki, v8, qs, ks, vs, is_causal=causal, output_dtype=torch.bfloat16)
        t0 = time.time()
        try:
            fn(16384)()
        except Exception as e:
            print(f"SWEEP {mode} tma={tma} FAILED {e!r}"[:500], flush=True); continue
        timings = getattr(K, "configs_timings", None) or {}
        print(f"SWEEP {mode} tma={tma} hd{hd} causal={int(causal)} tuned in {time.time()-t0:.0f}s", flush=True)
        for c, t in sorted(timings.items(), key=lambda kv: (kv[1][0] if isinstance(kv[1], (list, tuple)) else kv[1])):
            ms = t[0] if isinstance(t, (list, tuple)) else t
            print(f"   {tops(ms, 16384):7.1f} TOPS  {c}", flush=True)
        for L in (4096, 16384):
            ms = do_bench(fn(L), warmup=100, rep=400, return_mode="median")
            print(f"RESULT {mode} tma={tma} hd{hd} causal={int(causal)} L{L} {tops(ms, L):7.1f} TOPS best={K.best_config}", flush=True)
