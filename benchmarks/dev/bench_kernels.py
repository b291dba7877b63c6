# Development script (provenance of benchmarks/results/h100-dev-2026-11-23/); the official runner is benchmarks/bench_attention.py.
"""Device script: time the Triton attention kernels and SDPA baselines on the lent GPU.

python .devout/bench_kernels.py [--quick] [--hd 128,64] [--lens 1024,4096,8192,16384]
Writes $OUT/bench.csv, $OUT/accuracy.csv; prints a table last.
"""
from __future__ import annotations
import argparse, csv, os, sys, time, math
os.environ.setdefault("TRITON_PRINT_AUTOTUNING", "1")
sys.path.insert(0, os.getcwd())
import torch, triton
import torch.nn.functional as F
from triton.testing import do_bench
from sageattention.testing.reference import quant_per_block_int8_ref, attention_ref, LOG2E
from sageattention.testing.emulation import quant_per_channel_fp8_ref
from sageattention.triton.attn_qk_int8_pv_fp16 import attn_qk_int8_pv_fp16, _attn_qk_int8_kernel
from sageattention.triton.attn_qk_int8_pv_fp8 import attn_qk_int8_pv_fp8

OUT = os.environ.get("OUT", ".devout/out")
os.makedirs(OUT, exist_ok=True)
ap = argparse.ArgumentParser()
ap.add_argument("--hd", default="128,64")
ap.add_argument("--lens", default="1024,4096,8192,16384")
ap.add_argument("--causal", default="0,1")
ap.add_argument("--modes", default="fp32,fp16acc,fp8t")
ap.add_argument("--acc", type=int, default=1)
ap.add_argument("--e2e", type=int, default=1)
ap.add_argument("--sdpa", type=int, default=1)
args = ap.parse_args()

print("gpu", torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
B, H = 4, 32
rows = []

# Public API (the API engineer's) if present in this tree, for end-to-end timing.
api = {}
try:
    import sageattention as sa
    for name in ("sageattn_qk_int8_pv_fp16_triton", "sageattn_qk_int8_pv_fp8_triton"):
        if hasattr(sa, name):
            api[name] = getattr(sa, name)
except Exception as e:  # noqa: BLE001
    print("public API not importable:", repr(e)[:300])
print("public API functions:", sorted(api))


def tops(ms, L, d, causal):
    f = 4 * B * H * L * L * d / (2 if causal else 1)
    return f / (ms * 1e-3) / 1e12


def bench(fn):
    return do_bench(fn, warmup=100, rep=400, return_mode="median")


def record(impl, L, d, causal, ms, note=""):
    t = tops(ms, L, d, causal)
    rows.append(dict(impl=impl, seqlen=L, head_dim=d, causal=int(causal), ms=round(ms, 4), tops=round(t, 1), note=note))
    print(f"{impl:34s} hd{d} L{L:6d} causal={int(causal)} {ms:8.3f} ms {t:7.1f} TOPS {note}", flush=True)


def best_cfg():
    c = getattr(_attn_qk_int8_kernel, "best_config", None)
    return str(c) if c is not None else ""


for d in [int(x) for x in args.hd.split(",")]:
    for causal in [bool(int(x)) for x in args.causal.split(",")]:
        for L in [int(x) for x in args.lens.split(",")]:
            torch.manual_seed(0)
            q = torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16)
            qi, qs, ki, ks, _ = quant_per_block_int8_ref(q, k)
            vh = v.half()
            modes = args.modes.split(",")
            if "fp32" in modes:
                record("kernel_fp16pv_acc32", L, d, causal, bench(lambda: attn_qk_int8_pv_fp16(qi, ki, vh, qs, ks, is_causal=causal, output_dtype=torch.bfloat16)), best_cfg())
            if "fp16acc" in modes:
                record("kernel_fp16pv_acc16", L, d, causal, bench(lambda: attn_qk_int8_pv_fp16(qi, ki, vh, qs, ks, is_causal=causal, pv_accum_dtype="fp16+fp32", output_dtype=torch.bfloat16)), best_cfg())
            if "fp8" in modes or "fp8t" in modes:
                v8, vs = quant_per_channel_fp8_ref(v)
                if "fp8" in modes:
                    record("kernel_fp8pv_vD", L, d, causal, bench(lambda: attn_qk_int8_pv_fp8(qi, ki, v8, qs, ks, vs, is_causal=causal, output_dtype=torch.bfloat16)), best_cfg())
                if "fp8t" in modes:
                    v8t = v8.transpose(-1, -2).contiguous().transpose(-1, -2)  # tokens contiguous
                    record("kernel_fp8pv_vT", L, d, causal, bench(lambda: attn_qk_int8_pv_fp8(qi, ki, v8t, qs, ks, vs, is_causal=causal, output_dtype=torch.bfloat16)), best_cfg())
            if args.e2e:
                try:
                    from sageattention.triton.quant_per_block_int8 import mean_over_tokens, quant_per_block_int8
                    from sageattention.triton.quant_per_channel_fp8 import quant_per_channel_fp8
                    sc = d ** -0.5 * LOG2E

                    def manual_fp8():
                        km = mean_over_tokens(k)
                        a, a_s = quant_per_block_int8(q, block_size=128, pre_scale=sc)
                        b_, b_s = quant_per_block_int8(k, block_size=64, mean=km)
                        v8_, vs_, _ = quant_per_channel_fp8(v, token_contiguous=True)
                        return attn_qk_int8_pv_fp8(a, b_, v8_, a_s, b_s, vs_, is_causal=causal, output_dtype=torch.bfloat16)[0]

                    def manual_fp16():
                        km = mean_over_tokens(k)
                        a, a_s = quant_per_block_int8(q, block_size=128, pre_scale=sc)
                        b_, b_s = quant_per_block_int8(k, block_size=64, mean=km)
                        return attn_qk_int8_pv_fp16(a, b_, v.half(), a_s, b_s, is_causal=causal, output_dtype=torch.bfloat16)[0]

                    def quant_only():
                        km = mean_over_tokens(k)
                        quant_per_block_int8(q, block_size=128, pre_scale=sc)
                        quant_per_block_int8(k, block_size=64, mean=km)
                        v.half()

                    record("e2e_manual_fp16pv(quant+kernel)", L, d, causal, bench(manual_fp16))
                    record("e2e_manual_fp8pv_vT(quant+kernel)", L, d, causal, bench(manual_fp8))
                    record("quant_only_qk+vhalf", L, d, causal, bench(quant_only))
                except Exception as e:  # noqa: BLE001
                    print("manual e2e failed", repr(e)[:300])
                for name, fn in api.items():
                    try:
                        record("e2e_" + name, L, d, causal, bench(lambda: fn(q, k, v, tensor_layout="HND", is_causal=causal)))
                    except Exception as e:  # noqa: BLE001
                        print("e2e failed", name, repr(e)[:300])
            if args.sdpa:
                from torch.nn.attention import sdpa_kernel, SDPBackend
                for tag, be in (("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with sdpa_kernel([be]):
                            record(tag, L, d, causal, bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)))
                    except Exception as e:  # noqa: BLE001
                        print(tag, "failed", repr(e)[:200])
            del q, k, v, qi, ki, vh
            torch.cuda.empty_cache()

with open(os.path.join(OUT, "bench.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader(); w.writerows(rows)


def metrics(o, ref):
    o, ref = o.double().flatten(), ref.double().flatten()
    cos = (o @ ref / (o.norm() * ref.norm())).item()
    l1 = ((o - ref).abs().sum() / ref.abs().sum()).item()
    rmse = ((o - ref) ** 2).mean().sqrt().item()
    return cos, l1, rmse


acc_rows = []
if args.acc:
    L, d = 4096, 128
    for dist in ("randn", "kbias"):
        torch.manual_seed(1)
        q = torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16)
        if dist == "kbias":
            k = (k.float() + 4 * torch.randn(B, H, 1, d, device="cuda")).bfloat16()
        for causal in (False, True):
            ref = torch.cat([attention_ref(q[i:i+1], k[i:i+1], v[i:i+1], is_causal=causal)[0] for i in range(B)])
            qi, qs, ki, ks, _ = quant_per_block_int8_ref(q, k)
            v8, vs = quant_per_channel_fp8_ref(v)
            outs = {
                "kernel_fp16pv_acc32": attn_qk_int8_pv_fp16(qi, ki, v.half(), qs, ks, is_causal=causal)[0],
                "kernel_fp16pv_acc16": attn_qk_int8_pv_fp16(qi, ki, v.half(), qs, ks, is_causal=causal, pv_accum_dtype="fp16+fp32")[0],
                "kernel_fp8pv": attn_qk_int8_pv_fp8(qi, ki, v8, qs, ks, vs, is_causal=causal)[0],
            }
            with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.FLASH_ATTENTION]):
                outs["sdpa-flash-bf16"] = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            for name, o in outs.items():
                assert torch.isfinite(o).all(), name
                cos, l1, rmse = metrics(o, ref)
                acc_rows.append(dict(impl=name, dist=dist, causal=int(causal), cos=f"{cos:.6f}", rel_l1=f"{l1:.5f}", rmse=f"{rmse:.3e}"))
                print(f"ACC {name:22s} {dist:6s} causal={int(causal)} cos={cos:.6f} relL1={l1:.5f} rmse={rmse:.3e}", flush=True)
        del q, k, v, ref
        torch.cuda.empty_cache()
    with open(os.path.join(OUT, "accuracy.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(acc_rows[0].keys()))
        w.writeheader(); w.writerows(acc_rows)

print("\n==== SUMMARY (TOPS) ====")
for r in rows:
    print(f"{r['impl']:34s} hd{r['head_dim']} c{r['causal']} L{r['seqlen']:6d} {r['tops']:7.1f}  {r['note']}")
for r in acc_rows:
    print(r)
