"""Time the sm90 attention kernel alone in one of its schedule variants (csrc/qattn/qk_int8_attn_sm90.cuh).

Needs an experiment build (``NVCC_APPEND_FLAGS=-DSAGEATTN_SM90_VARIANTS``; a default build holds
variant 0 only and refuses others). benchmarks/dev/sm90_variants.sh runs it for every variant:

    python benchmarks/dev/sm90_variants.py --variant 1 --shapes 128:16384,128:4096,64:16384 \
        --ref-dir /tmp/sm90-ref [--save-ref]

B=4, H=32, bf16, non-causal (``--causal`` for causal), inputs quantized once outside the timed region
as ``qk_int8_sv_f8_attn_sm90``'s kernel-only benchmark rows do (``api._cuda_quantize``, per-thread).
``--save-ref`` stores every 64th output row of each shape; without it the output is compared
bit for bit with the stored rows (a reordering variant must not change one bit; the exp2_poly
variants 8, 9, 25 and the ablations 4, 5 print "differs", as they should). ``--profile`` launches each shape a few times untimed, for ncu.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from triton.testing import do_bench

from sageattention import _ops, api


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in item.split(":")) for item in text.split(",") if item]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", type=parse_shapes, default=parse_shapes("128:16384,128:4096,64:16384"))
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--ref-dir", type=Path, default=Path("/tmp/sm90-ref"))
    ap.add_argument("--save-ref", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--variant", type=int, default=0, help="SAGEATTN_SM90_VARIANT for every launch")
    args = ap.parse_args()
    variant = args.variant
    os.environ["SAGEATTN_SM90_VARIANT"] = str(variant)  # the launcher reads it at every launch
    args.ref_dir.mkdir(parents=True, exist_ok=True)
    batch, heads = 4, 32
    for d, length in args.shapes:
        gen = torch.Generator(device="cuda").manual_seed(1234 + d + length)
        q, k, v = (torch.randn(batch, heads, length, d, device="cuda", dtype=torch.bfloat16, generator=gen)
                   for _ in range(3))
        ops = api._cuda_quantize(q, k, v, tensor_layout="HND", qk_quant_gran="per_thread", sm_scale=d**-0.5,
                                 pv_accum_dtype="fp32+fp32", smooth_k=True, smooth_v=False, pv="fp8", d=d, d_pad=d)
        kw = dict(tensor_layout="HND", is_causal=args.causal, qk_quant_gran="per_thread", qk_scale=1.0,
                  pv_accum_dtype="fp32+fp32", output_dtype=q.dtype)

        def run():
            return _ops.qk_int8_sv_f8_attn_sm90(ops.q_i8, ops.k_i8, ops.v, ops.v_scale, ops.q_scale, ops.k_scale,
                                                **kw)[0]

        out = run()
        torch.cuda.synchronize()
        if args.profile:
            for _ in range(3):
                run()
            torch.cuda.synchronize()
            continue
        rows = out[:, :, ::64].contiguous().cpu()
        ref_path = args.ref_dir / f"hd{d}_L{length}_c{int(args.causal)}.pt"
        if args.save_ref:
            torch.save(rows, ref_path)
            same = "saved"
        elif ref_path.exists():
            same = "identical" if torch.equal(rows, torch.load(ref_path)) else "differs"
        else:
            same = "no reference"
        ms = do_bench(run, warmup=25, rep=200)
        flops = 4 * batch * heads * length * length * d / (2 if args.causal else 1)
        print(f"variant {variant} hd{d} L{length} causal {int(args.causal)}: {ms:.4f} ms "
              f"{flops / ms / 1e9:.1f} TOPS, output {same}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
