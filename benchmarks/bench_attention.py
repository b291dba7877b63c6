"""Attention benchmark: our implementations against PyTorch SDPA (flash, cuDNN), verified first.

Usage (pixi task ``bench``; from the repository root)::

    python benchmarks/bench_attention.py --plot             # full suite on the GPU (~6 min on an H100) + PNGs
    python benchmarks/bench_attention.py --quick            # 1K/4K, hd128
    python benchmarks/bench_attention.py --impl sageattn_qk_int8_pv_fp16_triton,sdpa-flash --seqlen 16K
    python benchmarks/bench_attention.py --interpret --csv /tmp/smoke.csv   # CPU plumbing smoke test
    python benchmarks/plot.py benchmarks/results/attention_<gpu>.csv        # the PNG

Suite (research notes §3.1): B=4, H=32, L ∈ {1K, 2K, 4K, 8K, 16K} (+32K with ``--long``),
D ∈ {64, 128}, bf16, causal 0/1. Every output is checked against float64 attention before it is
timed (``benchmarks/common.py``); results are appended to ``benchmarks/results/attention_<gpu>.csv``.
Exit status: 0 all verified, 1 some implementation failed, 2 bad usage / no GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    # Appended, not prepended: an installed sageattention (with its compiled ops) wins over the tree.
    sys.path.append(str(_REPO_ROOT))

DEFAULT_SEQLENS = (1024, 2048, 4096, 8192, 16384)
LONG_SEQLEN = 32768
QUICK_SEQLENS = (1024, 4096)
DEFAULT_HEAD_DIMS = (64, 128)
#: Interpreter smoke shapes: a length that is not a multiple of the 128/64 blocks.
INTERPRET_SEQLENS = (130,)
INTERPRET_HEAD_DIMS = (64,)

#: Public functions benchmarked end to end → tolerance key ``(qk, pv, pv accumulation)`` of
#: ``sageattention.testing.metrics.TOLERANCES`` (the accumulation the API uses for that function).
FP16_SCHEME = ("int8", "fp16", "fp32")
FP8_SCHEME = ("int8", "fp8", "fp32")
END2END = {
    "sageattn": FP8_SCHEME,  # dispatches by arch; FP8 P·V is the loosest scheme it may pick
    "sageattn_qk_int8_pv_fp16_triton": FP16_SCHEME,
    "sageattn_qk_int8_pv_fp8_triton": FP8_SCHEME,
    "sageattn_qk_int8_pv_fp16_cuda": FP16_SCHEME,
    "sageattn_qk_int8_pv_fp8_cuda": ("int8", "fp8", "fp32+fp16"),  # its default: SageAttention2++
    "sageattn_qk_int8_pv_fp8_cuda_sm90": FP8_SCHEME,
}
CUDA_ONLY = {"sageattn_qk_int8_pv_fp16_cuda", "sageattn_qk_int8_pv_fp8_cuda", "sageattn_qk_int8_pv_fp8_cuda_sm90"}


def parse_lengths(text: str) -> list[int]:
    """``"1K,2k,4096"`` → ``[1024, 2048, 4096]``."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        scale = 1024 if part[-1] in "kK" else 1
        digits = part[:-1] if scale > 1 else part
        if not digits.isdigit() or int(digits) == 0:
            raise argparse.ArgumentTypeError(f"--seqlen: {part!r} is not a positive length like 4096 or 4K")
        out.append(int(digits) * scale)
    if not out:
        raise argparse.ArgumentTypeError("--seqlen: empty list")
    return out


def parse_ints(name: str, allowed=None):
    def parse(text: str) -> list[int]:
        try:
            values = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: {text!r} is not a comma-separated list of integers") from None
        bad = [x for x in values if (x not in allowed if allowed is not None else x <= 0)]
        if bad or not values:
            hint = f"; allowed {sorted(allowed)}" if allowed is not None else "; positive integers"
            raise argparse.ArgumentTypeError(f"{name}: invalid value(s) {bad or text!r}{hint}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], action="extend",
                   help="implementations to run, comma-separated (default: every default one; see --list)")
    p.add_argument("--mode", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], action="extend",
                   help="end2end, kernel, quant (default: all)")
    p.add_argument("--seqlen", type=parse_lengths, action="extend", help="sequence lengths, e.g. 1K,4K,16K")
    p.add_argument("--head-dim", type=parse_ints("--head-dim"), action="extend", help="head dims (default 64,128)")
    p.add_argument("--causal", type=parse_ints("--causal", {0, 1}), action="extend", help="0, 1 or 0,1 (default both)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 4; 1 with --interpret)")
    p.add_argument("--heads", type=int, default=None, help="heads (default 32; 2 with --interpret)")
    p.add_argument("--long", action="store_true", help="add L=32K to the default lengths")
    p.add_argument("--quick", action="store_true", help="L 1K,4K and hd128 only")
    p.add_argument("--interpret", action="store_true",
                   help="CPU smoke test of the plumbing with TRITON_INTERPRET=1 and tiny shapes (timings meaningless)")
    p.add_argument("--csv", type=Path, default=None, help="CSV to append to (default benchmarks/results/attention_<gpu>.csv)")
    p.add_argument("--plot", action="store_true", help="draw the end2end and kernel charts from the CSV afterwards")
    p.add_argument("--list", action="store_true", help="list implementations and exit")
    return p


# --- implementations ----------------------------------------------------------------------------


def _sageattention_function(name: str):
    from benchmarks.common import ImplUnavailable

    try:
        import sageattention
    except ImportError as exc:
        raise ImplUnavailable(f"cannot import sageattention: {exc}") from None
    fn = getattr(sageattention, name, None)
    if fn is None:
        raise ImplUnavailable(f"sageattention {getattr(sageattention, '__file__', '?')} has no {name}")
    return fn


def _require_cuda_ops():
    from benchmarks.common import ImplUnavailable

    try:
        from sageattention import _ops
    except ImportError as exc:
        raise ImplUnavailable(f"sageattention._ops unavailable: {exc}") from None
    if not _ops.cuda_ops_available():
        raise ImplUnavailable(_ops.missing_build_reason())


def end2end_impl(name: str, scheme: str):
    from benchmarks import common

    def prepare(q, k, v, shape):
        if name in CUDA_ONLY:
            _require_cuda_ops()
        fn = _sageattention_function(name)
        return lambda: fn(q, k, v, tensor_layout="HND", is_causal=shape.causal)

    def check(result, q, k, v, shape):
        return common.check_attention(result, q, k, v, shape, scheme)

    return common.Impl(name, "end2end", prepare, scheme=scheme, check=check, needs_cuda=name in CUDA_ONLY)


def sdpa_impl(name: str, backend_name: str, default: bool = True):
    from benchmarks import common

    def prepare(q, k, v, shape):
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)

        def call():
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal)

        try:
            call()  # untimed probe: torch raises "No available kernel" when the backend cannot run
        except RuntimeError as exc:
            if "No available kernel" in str(exc):
                raise common.ImplUnavailable(f"SDPA backend {backend_name} cannot run this shape/GPU") from None
            raise
        return call

    def check(result, q, k, v, shape):
        return common.check_attention(result, q, k, v, shape, common.BASELINE)

    return common.Impl(name, "end2end", prepare, scheme=common.BASELINE, check=check,
                       needs_cuda=backend_name != "MATH", default=default)


def _quantize_qk(q, k, shape):
    """What the Triton API does before its kernel: K mean, per-block INT8 Q (128 tokens,
    sm_scale·log2e folded in) and K (64 tokens, mean-smoothed)."""
    from benchmarks import common
    from sageattention.triton.quant_per_block_int8 import mean_over_tokens, quant_per_block_int8

    q_i8, q_scale = quant_per_block_int8(q, block_size=128, pre_scale=common.sm_scale_log2e(shape.head_dim))
    k_i8, k_scale = quant_per_block_int8(k, block_size=64, mean=mean_over_tokens(k))
    return q_i8, q_scale, k_i8, k_scale


def _quantize_v_fp8(v):
    """V to e4m3 with one float32 scale per (batch, head, channel), stored token-contiguous as
    the FP8 API path does. (With channel-major V this kernel-only row measured 256 TOPS at 16K
    hd128 on the H100 while the public function ran 619 end to end: session 3.)"""
    from sageattention.triton.quant_per_channel_fp8 import quant_per_channel_fp8

    v_fp8, v_scale, _ = quant_per_channel_fp8(v, token_contiguous=True)
    return v_fp8, v_scale


def kernel_impl(name: str, scheme):
    """The Triton attention kernel alone, on inputs quantized outside the timed region."""
    from benchmarks import common

    def prepare(q, k, v, shape):
        import torch

        from sageattention.triton import attn_qk_int8_pv_fp8, attn_qk_int8_pv_fp16

        q_i8, q_scale, k_i8, k_scale = _quantize_qk(q, k, shape)
        kw = dict(tensor_layout="HND", is_causal=shape.causal, output_dtype=q.dtype)
        if name == "attn_qk_int8_pv_fp16":
            v16 = v.to(torch.float16)  # the API feeds fp16 V to this kernel
            fn = attn_qk_int8_pv_fp16.attn_qk_int8_pv_fp16
            return lambda: fn(q_i8, k_i8, v16, q_scale, k_scale, pv_accum_dtype=scheme[2], **kw)[0]
        v_fp8, v_scale = _quantize_v_fp8(v)
        fn = attn_qk_int8_pv_fp8.attn_qk_int8_pv_fp8
        return lambda: fn(q_i8, k_i8, v_fp8, q_scale, k_scale, v_scale, **kw)[0]

    def check(result, q, k, v, shape):
        return common.check_attention(result, q, k, v, shape, scheme)

    return common.Impl(name, "kernel", prepare, scheme=scheme, check=check)


#: Kernel-only rows of the compiled mma.sync ops: op -> (P·V kind, pv_accum_dtype the public
#: function uses by default, tolerance key).
CUDA_KERNELS = {
    "qk_int8_sv_f16_attn": ("fp16", "fp32", FP16_SCHEME),
    "qk_int8_sv_f8_attn": ("fp8", "fp32+fp16", ("int8", "fp8", "fp32+fp16")),
    # Issue 6's wgmma kernel (9.0a builds only); it implements "fp32+fp32" alone.
    "qk_int8_sv_f8_attn_sm90": ("fp8", "fp32+fp32", ("int8", "fp8", "fp32+fp32")),
}


def cuda_kernel_impl(op_name: str):
    """A compiled attention op alone, on inputs quantized outside the timed region exactly as the
    public ``sageattn_qk_int8_pv_*_cuda`` function quantizes them (``api._cuda_quantize``)."""
    from benchmarks import common

    pv, accum, scheme = CUDA_KERNELS[op_name]

    def prepare(q, k, v, shape):
        _require_cuda_ops()
        from sageattention import _ops, _support, api

        if op_name not in _support.built_cuda_ops():
            raise common.ImplUnavailable(f"this build has no CUDA kernel for sageattention::{op_name}")
        d = shape.head_dim
        ops = api._cuda_quantize(
            q, k, v, tensor_layout="HND", qk_quant_gran="per_thread", sm_scale=d**-0.5, pv_accum_dtype=accum,
            smooth_k=True, smooth_v=False, pv=pv, d=d, d_pad=d,
        )
        kw = dict(tensor_layout="HND", is_causal=shape.causal, qk_quant_gran="per_thread", qk_scale=1.0,
                  pv_accum_dtype=accum, output_dtype=q.dtype)
        if pv == "fp16":
            return lambda: _ops.qk_int8_sv_f16_attn(ops.q_i8, ops.k_i8, ops.v, ops.q_scale, ops.k_scale, **kw)[0]
        fp8_op = getattr(_ops, op_name)
        return lambda: fp8_op(ops.q_i8, ops.k_i8, ops.v, ops.v_scale, ops.q_scale, ops.k_scale, **kw)[0]

    def check(result, q, k, v, shape):
        return common.check_attention(result, q, k, v, shape, scheme)

    return common.Impl(op_name, "kernel", prepare, scheme=scheme, check=check, needs_cuda=True)


def quant_impls() -> list:
    """The quantizers of the end-to-end paths, timed alone: Q/K (with the K mean) and V to FP8."""
    from benchmarks import common

    def prepare_qk(q, k, v, shape):
        return lambda: _quantize_qk(q, k, shape)

    def prepare_v(q, k, v, shape):
        return lambda: _quantize_v_fp8(v)

    return [
        common.Impl("quant_per_block_int8", "quant", prepare_qk, check=common.check_qk_quantizers),
        common.Impl("quant_per_channel_fp8", "quant", prepare_v, check=common.check_v_quantizer),
        *(mma_operands_impl(backend) for backend in MMA_QUANT_BACKENDS),
    ]


#: Row name -> quantization_backend of api._cuda_quantize: every input of the FP8 mma.sync op
#: (per-thread Q/K with the K mean, V to the permuted FP8 operand), Triton kernels + PyTorch
#: transposes vs the fused CUDA quantizers.
MMA_QUANT_BACKENDS = {"mma_operands_triton": "triton", "mma_operands_cuda": "cuda"}


def mma_operands_impl(name: str):
    """``api._cuda_quantize`` for ``qk_int8_sv_f8_attn`` timed alone, with one backend."""
    from benchmarks import common

    backend = MMA_QUANT_BACKENDS[name]

    def quantize(q, k, v, shape, which):
        from sageattention import api

        d = shape.head_dim
        return api._cuda_quantize(
            q, k, v, tensor_layout="HND", qk_quant_gran="per_thread", sm_scale=d**-0.5, pv_accum_dtype="fp32+fp16",
            smooth_k=True, smooth_v=False, pv="fp8", d=d, d_pad=d, quantization_backend=which,
        )

    def prepare(q, k, v, shape):
        if backend == "cuda":
            _require_cuda_ops()
            from sageattention import _support

            missing = set(_support.CUDA_MMA_QUANT_OPS) - _support.built_cuda_ops()
            if missing:
                raise common.ImplUnavailable(f"this build has no CUDA kernel for {sorted(missing)}")
        return lambda: quantize(q, k, v, shape, backend)

    def check(result, q, k, v, shape):
        # Against the Triton backend, the path the CUDA one replaces: same bytes except K codes, whose
        # mean is summed in another order (one step at most).
        want = quantize(q, k, v, shape, "triton")
        if not (torch_equal(result.q_i8, want.q_i8) and torch_equal(result.q_scale, want.q_scale)
                and torch_equal(result.v.view_as(want.v), want.v) and torch_equal(result.v_scale, want.v_scale)):
            raise common.VerificationError(f"{name}: Q or V operands differ from the Triton backend")
        if (result.k_i8.int() - want.k_i8.int()).abs().max().item() > 1:
            raise common.VerificationError(f"{name}: K codes differ from the Triton backend by more than one step")
        return None

    return common.Impl(name, "quant", prepare, check=check, needs_cuda=backend == "cuda")


def torch_equal(a, b) -> bool:
    """Bytewise equality (float8 tensors have no torch.equal kernel on every torch)."""
    import torch

    if a.dtype == torch.float8_e4m3fn:
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    return a.shape == b.shape and bool(torch.equal(a, b))


def default_registry() -> dict:
    """name → Impl, in run order."""
    impls = [end2end_impl(name, scheme) for name, scheme in END2END.items()]
    impls += [
        sdpa_impl("sdpa-flash", "FLASH_ATTENTION"),
        sdpa_impl("sdpa-cudnn", "CUDNN_ATTENTION"),
        sdpa_impl("sdpa-math", "MATH", default=False),  # O(L²) memory: explicit --impl only
        kernel_impl("attn_qk_int8_pv_fp16", FP16_SCHEME),
        kernel_impl("attn_qk_int8_pv_fp8", FP8_SCHEME),
        *(cuda_kernel_impl(op) for op in CUDA_KERNELS),
        *quant_impls(),
    ]
    return {impl.name: impl for impl in impls}


# --- main ---------------------------------------------------------------------------------------


def usage_error(message: str):
    """Print ``message`` to stderr and exit with status 2 (bad usage / no GPU)."""
    print(f"bench_attention.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def select_impls(registry: dict, names, modes) -> list:
    if names:
        unknown = [n for n in names if n not in registry]
        if unknown:
            usage_error(f"unknown --impl {unknown}; known: {', '.join(registry)}")
        chosen = [registry[n] for n in names]
    else:
        chosen = [impl for impl in registry.values() if impl.default]
    if modes:
        from benchmarks.common import MODES

        bad = [m for m in modes if m not in MODES]
        if bad:
            usage_error(f"unknown --mode {bad}; known: {', '.join(MODES)}")
        chosen = [impl for impl in chosen if impl.mode in modes]
    return chosen


def main(argv=None, registry=None) -> int:
    args = build_parser().parse_args(argv)
    if args.interpret:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            usage_error("--interpret: triton was imported without TRITON_INTERPRET=1; run in a fresh process")
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (read at kernel decoration)

    import torch

    from benchmarks import common

    registry = registry if registry is not None else default_registry()
    if args.list:
        for impl in registry.values():
            print(f"{impl.name:<36} {impl.mode:<8} {'default' if impl.default else 'explicit'}")
        return 0
    impls = select_impls(registry, args.impl, args.mode)
    if not args.interpret and not torch.cuda.is_available():
        usage_error(
            f"needs a CUDA GPU: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). "
            "Use --interpret for the CPU plumbing smoke test."
        )

    if args.interpret:
        seqlens, head_dims = INTERPRET_SEQLENS, INTERPRET_HEAD_DIMS
        batch, heads = args.batch or 1, args.heads or 2
    else:
        seqlens = QUICK_SEQLENS if args.quick else DEFAULT_SEQLENS + ((LONG_SEQLEN,) if args.long else ())
        head_dims = (128,) if args.quick else DEFAULT_HEAD_DIMS
        batch, heads = args.batch or 4, args.heads or 32
    seqlens = args.seqlen or seqlens
    head_dims = args.head_dim or head_dims
    causals = args.causal or (0, 1)
    shapes = [
        common.Shape(batch, heads, n, d, bool(c))
        for d in head_dims for c in causals for n in seqlens
    ]
    outcomes, csv_path = common.run(impls, shapes, interpret=args.interpret, csv_path=args.csv)
    failed = [o for o in outcomes if o.failed]
    measured = sum(o.row is not None for o in outcomes)
    skipped = sum(o.skipped is not None for o in outcomes)
    print(f"# {measured} measured, {skipped} skipped, {len(failed)} failed")
    for o in failed:
        print(f"# FAILED {o.impl} L={o.shape.seqlen} D={o.shape.head_dim} causal={int(o.shape.causal)}: {o.failed}")
    if args.plot and measured:
        from benchmarks import plot

        rows = [o.row for o in outcomes if o.row is not None]
        for mode in sorted({r["mode"] for r in rows} - {"quant"}):
            if plot.main([str(csv_path), "--mode", mode, "--gpu", rows[0]["gpu"]]):
                return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
