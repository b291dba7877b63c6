"""Shared helpers of the mma.sync CUDA attention tests (tests/test_qk_int8_sv_f*_attn_cuda.py).

Each op is checked against two yardsticks (STYLE.md H4): the PyTorch emulation of its exact scheme
(``testing.emulation.attn_qk_int8_mma_emulated``: a miss is a kernel bug) and the float64
reference through ``testing.metrics.TOLERANCES`` (the scheme's quantization error).
"""

from __future__ import annotations

import pytest
import torch

from sageattention import _ops, _support
from sageattention.testing.emulation import (
    EMULATION_TOLERANCE,
    MMA_BLOCK_K,
    MMA_BLOCK_Q,
    MMA_WARP_Q,
    attn_qk_int8_mma_emulated,
    emulation_error,
    natural_lse,
    quant_per_channel_fp8_ref,
)
from sageattention.testing.metrics import LSE_MAX_ABS_ERROR, assert_close_to_reference
from sageattention.testing.reference import (
    attention_ref,
    quant_per_thread_int8_ref,
    quant_per_warp_int8_ref,
)

#: (L_q, L_k) around the 128-row Q tile and the 64-key K block; pairs with L_q != L_k exercise the
#: top-left causal alignment and tails on both sides.
LENGTHS = [(1, 1), (17, 17), (64, 64), (65, 65), (130, 130), (17, 130), (130, 17), (300, 1000), (1000, 300)]

#: pv_accum_dtype -> scale_max of the FP8 V quantization (api._FP8_V_SCALE_MAX).
FP8_V_SCALE_MAX = {"fp32": 448.0, "fp32+fp32": 448.0, "fp32+fp16": 2.25}


def require_op(op: str) -> None:
    """Skip (with the reason) without a GPU or without the op in this build."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not _ops.cuda_ops_available():
        pytest.skip(f"compiled ops not built: {_ops.missing_build_reason()}")
    if op not in _support.built_cuda_ops():
        pytest.skip(f"this build has no CUDA kernel for sageattention::{op} (not compiled into it: for attention ops, its arch family was not in the arch list)")


def make_qkv(*, b=1, hq=2, hkv=2, lq=65, lk=65, d=64, layout="HND", dtype=torch.float16, k_bias=0.0):
    def shape(h, n):
        return (b, h, n, d) if layout == "HND" else (b, n, h, d)

    q = torch.randn(shape(hq, lq), device="cuda").to(dtype)
    k = torch.randn(shape(hkv, lk), device="cuda")
    if k_bias:
        k = k + torch.randn(d, device="cuda") * k_bias  # channel-biased K (what smoothing is for)
    k = k.to(dtype)
    v = torch.randn(shape(hkv, lk), device="cuda").to(dtype)
    return q, k, v


def quantize_qk(q, k, layout, gran):
    """Reference per-thread / per-warp INT8 in the kernels' groups (sm_scale·log2e folded into Q)."""
    if gran == "per_thread":
        return quant_per_thread_int8_ref(q, k, tensor_layout=layout, fold_sm_scale=True, blkq=MMA_BLOCK_Q,
                                         warpq=MMA_WARP_Q, blkk=MMA_BLOCK_K, warpk=MMA_BLOCK_K)
    return quant_per_warp_int8_ref(q, k, tensor_layout=layout, blkq=MMA_BLOCK_Q, warpq=MMA_WARP_Q, blkk=MMA_BLOCK_K)


def run_and_check(pv, q, k, v, *, layout="HND", causal=False, gran="per_thread", accum, return_lse=True,
                  kind="randn", check_reference=True, fp8_op=None, block_k=None):
    """Run the op on reference-quantized inputs; compare with its emulation, the reference and LSE.

    ``fp8_op``: the FP8 op's wrapper (default ``_ops.qk_int8_sv_f8_attn``; the sm90 wgmma kernel
    ``_ops.qk_int8_sv_f8_attn_sm90`` shares its operands, scheme and emulation, with
    ``block_k=128``: its KV step)."""
    qi, qs, ki, ks, km = quantize_qk(q, k, layout, gran)
    if pv == "fp16":
        v_in = v.half()
        out, lse2 = _ops.qk_int8_sv_f16_attn(qi, ki, v_in, qs, ks, tensor_layout=layout, is_causal=causal,
                                             qk_quant_gran=gran, pv_accum_dtype=accum, output_dtype=q.dtype,
                                             return_lse=return_lse)
        emu, emu_lse, key = attn_qk_int8_mma_emulated(qi, ki, v_in, qs, ks, tensor_layout=layout, is_causal=causal,
                                                      qk_quant_gran=gran, pv_accum_dtype=accum)
    else:
        v8, vs = quant_per_channel_fp8_ref(v, tensor_layout=layout, scale_max=FP8_V_SCALE_MAX[accum])
        op = fp8_op or _ops.qk_int8_sv_f8_attn
        out, lse2 = op(qi, ki, _ops.fp8_v_operand(v8, layout), vs, qs, ks, tensor_layout=layout, is_causal=causal,
                       qk_quant_gran=gran, pv_accum_dtype=accum, output_dtype=q.dtype, return_lse=return_lse)
        emu, emu_lse, key = attn_qk_int8_mma_emulated(qi, ki, v8, qs, ks, vs, tensor_layout=layout, is_causal=causal,
                                                      qk_quant_gran=gran, pv_accum_dtype=accum, block_k=block_k)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all(), "output has NaN/Inf"
    tol = EMULATION_TOLERANCE[key]
    err, failure = emulation_error(out, emu, key)
    assert failure is None, failure
    result = {"emulation_err": err}
    if check_reference:
        ref, ref_lse = attention_ref(q, k, v, tensor_layout=layout, is_causal=causal)
        result.update(assert_close_to_reference(out, ref, scheme=("int8", pv, accum), emulated=emu, inputs=kind,
                                                context=f"qk_int8_sv_{pv}_attn {layout} causal={causal} {gran}"))
    if return_lse:
        lse_err = (lse2 - emu_lse).abs().max().item()
        assert lse_err <= tol["lse"], f"LSE vs emulation: {lse_err:.3e} > {tol['lse']:.1e}"
        if check_reference:
            ref_err = (natural_lse(lse2, q, km, layout) - ref_lse).abs().max().item()
            assert ref_err <= LSE_MAX_ABS_ERROR, f"LSE vs reference: {ref_err:.3e} > {LSE_MAX_ABS_ERROR}"
    return out, result


def fp8_op_args(layout="HND", return_lse=True, accum="fp32+fp32"):
    """Positional arguments of the FP8 attention ops (``qk_int8_sv_f8_attn`` and its sm90 twin share
    the schema) on GQA 4:2, L_q 100 / L_k 90, hd64, per-thread scales: a list, so tests can spoil one."""
    q, k, v = make_qkv(b=1, hq=4, hkv=2, lq=100, lk=90, d=64, layout=layout)
    qi, qs, ki, ks, _ = quantize_qk(q, k, layout, "per_thread")
    v8, vs = quant_per_channel_fp8_ref(v, tensor_layout=layout, scale_max=FP8_V_SCALE_MAX[accum])
    o = torch.empty(q.shape, dtype=torch.float16, device="cuda")
    lse = torch.empty((1, 4, 100), dtype=torch.float32, device="cuda") if return_lse else None
    return [qi, ki, _ops.fp8_v_operand(v8, layout), vs, o, qs, ks, lse, layout, False, "per_thread", 1.0, accum]


#: (index into fp8_op_args, spoiler, message) that both FP8 ops must reject with a RuntimeError; each
#: test file adds the pv_accum_dtype its op does not take (argument 12).
FP8_OP_BAD_INPUTS = [
    (0, lambda t: t.float(), "q must be"),
    (2, lambda t: t.view(torch.uint8), "v must be"),
    (2, lambda t: t[..., :-16], "v must be the"),
    (3, lambda t: t[:, :, :-1], "v_scale must have shape"),
    (4, lambda t: t.float(), "o must be"),
    (5, lambda t: t[:, :, :-1], "q_scale must have shape"),
    (6, lambda t: t[:, :, :-1], "k_scale must have shape"),
]


def check_public_head_dims_gqa_and_lse(fn, layout, d, scheme):
    """A public CUDA function on GQA 4:2, causal, channel-biased K, with LSE: float64 reference
    within ``TOLERANCES[scheme]`` ("biased_k") and the LSE within ``LSE_MAX_ABS_ERROR``."""
    from sageattention.testing.metrics import LSE_MAX_ABS_ERROR, TOLERANCES, metrics
    from sageattention.testing.reference import attention_ref

    q, k, v = make_qkv(b=1, hq=4, hkv=2, lq=300, lk=300, d=d, layout=layout, k_bias=2.0)
    out, lse = fn(q, k, v, tensor_layout=layout, is_causal=True, return_lse=True)
    ref, ref_lse = attention_ref(q, k, v, tensor_layout=layout, is_causal=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    got = metrics(out, ref)
    tol = TOLERANCES[scheme]
    assert got["cosine"] >= tol.min_cosine["biased_k"] and got["rel_l1"] <= tol.max_rel_l1["biased_k"], got
    assert (lse.double() - ref_lse).abs().max().item() <= LSE_MAX_ABS_ERROR


def check_public_non_contiguous_inputs(fn):
    """Strided NHD views give bit-identical output to their contiguous copies."""
    big = torch.randn(2, 300, 6, 160, device="cuda", dtype=torch.bfloat16)
    q, k, v = big[:, :, 0:2, :128], big[:, :, 2:4, 16:144], big[:, :, 4:6, 32:160]
    out = fn(q, k, v, tensor_layout="NHD")
    expected = fn(q.contiguous(), k.contiguous(), v.contiguous(), tensor_layout="NHD")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
