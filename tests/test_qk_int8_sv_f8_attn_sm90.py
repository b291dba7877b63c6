"""CUDA wgmma kernel (Hopper, sm_90a): INT8 Q·Kᵀ + FP8 e4m3 P·V (``sageattention::qk_int8_sv_f8_attn_sm90``).

GPU tests (skip without a GPU or without the op in the build: it is compiled only for ``9.0a``).
The op shares operands, scheme and emulation with ``qk_int8_sv_f8_attn`` ("fp32+fp32"), with
128-key KV steps instead of 64 (the emulation follows: ``block_k=128``), so the same yardsticks
apply (tests/_qattn_cuda.py). Public entry point:
``sageattn_qk_int8_pv_fp8_cuda_sm90``, which ``sageattn`` picks on sm90 (faster than Triton FP8).

When a case fails, run the two diagnostics first (``-k diagnostic``): the uniform-P one checks the
Vᵀ descriptor alone, the identity-V one reads P back and checks the Q·Kᵀ wgmma, the S accumulator
layout and the P -> A-fragment packing with the V token permutation.
"""

from __future__ import annotations

import pytest
import torch

from sageattention import _ops
from sageattention.testing.emulation import attn_qk_int8_mma_emulated, quant_per_channel_fp8_ref

from _opcheck import check_schema_by_bytes
from _qattn_cuda import (
    FP8_OP_BAD_INPUTS,
    FP8_V_SCALE_MAX,
    LENGTHS,
    check_public_head_dims_gqa_and_lse,
    check_public_non_contiguous_inputs,
    fp8_op_args,
    make_qkv,
    quantize_qk,
    require_op,
    run_and_check,
)

pytestmark = pytest.mark.gpu
OP = "qk_int8_sv_f8_attn_sm90"
ACCUM = "fp32+fp32"
SM90_BLOCK_K = 128  # keys per KV step of the wgmma kernel (csrc/qattn/qk_int8_attn_sm90.cuh)


@pytest.fixture(autouse=True)
def _needs_op():
    require_op(OP)


def _run(q, k, v, **kw):
    kw.setdefault("accum", ACCUM)
    return run_and_check("fp8", q, k, v, fp8_op=_ops.qk_int8_sv_f8_attn_sm90, block_k=SM90_BLOCK_K, **kw)


# ---- diagnostics: one wgmma operand at a time ------------------------------------------------


@pytest.mark.parametrize("d", [64, 128])
def test_diagnostic_uniform_p_reads_v_through_its_descriptor(d):
    """All keys equal -> P uniform per row -> O = mean of V over tokens (per channel), whatever the
    token order: a wrong Vᵀ descriptor (LBO/SBO, core-matrix layout) breaks this, P packing cannot."""
    lk = 192
    q, _, v = make_qkv(b=1, hq=1, hkv=1, lq=128, lk=lk, d=d)
    k = torch.randn(1, 1, 1, d, device="cuda").expand(1, 1, lk, d).contiguous().half()
    qi, qs, ki, ks, _ = quantize_qk(q, k, "HND", "per_thread")
    v8, vs = quant_per_channel_fp8_ref(v, tensor_layout="HND", scale_max=FP8_V_SCALE_MAX[ACCUM])
    out, _ = _ops.qk_int8_sv_f8_attn_sm90(qi, ki, _ops.fp8_v_operand(v8, "HND"), vs, qs, ks)
    expect = (v8.float() * vs[:, :, None, :]).mean(dim=2, keepdim=True).expand_as(out)
    err = (out.float() - expect).abs().max().item()
    assert err <= 2e-2, f"uniform P: max |O - mean(V)| = {err:.3e}; per-channel error {(out.float() - expect).abs().amax(dim=2)}"


@pytest.mark.parametrize("d", [64, 128])
def test_diagnostic_identity_v_reads_p_back(d):
    """L_k = 64 keys and V = I (channel c = key c, c < 64): O[i, j] = P[i, j] / l_i, the softmax row
    itself. Compared with the emulation, a mismatch pattern shows whether S (Q·Kᵀ wgmma, B = K
    descriptor, accumulator layout) or the P -> e4m3 A-fragment / V token permutation is wrong."""
    lq, lk = 128, 64
    q, k, _ = make_qkv(b=1, hq=1, hkv=1, lq=lq, lk=lk, d=d)
    v = torch.zeros(1, 1, lk, d, device="cuda", dtype=torch.float16)
    v[0, 0, torch.arange(lk), torch.arange(lk)] = 1.0
    qi, qs, ki, ks, _ = quantize_qk(q, k, "HND", "per_thread")
    v8, vs = quant_per_channel_fp8_ref(v, tensor_layout="HND", scale_max=FP8_V_SCALE_MAX[ACCUM])
    out, _ = _ops.qk_int8_sv_f8_attn_sm90(qi, ki, _ops.fp8_v_operand(v8, "HND"), vs, qs, ks)
    emu, _, _ = attn_qk_int8_mma_emulated(qi, ki, v8, qs, ks, vs, tensor_layout="HND", pv_accum_dtype=ACCUM,
                                          block_k=SM90_BLOCK_K)
    p_kernel, p_emu = out.float()[0, 0, :, :lk], emu.float()[0, 0, :, :lk]
    bad = ((p_kernel - p_emu).abs() > 2e-3 + 2e-2 * p_emu.abs()).nonzero()
    assert bad.numel() == 0, (
        f"P read back through V = I differs at {bad.shape[0]} (row, key) entries, first {bad[:16].tolist()}; "
        f"rows wrong in all keys -> S / Q fragment, keys wrong in groups of 16 -> P packing / V permutation"
    )
    if d > lk:
        assert out[0, 0, :, lk:].abs().max().item() == 0.0, "channels past the identity must stay 0"


# ---- lengths, masks, layouts, GQA ----------------------------------------------------------




@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk", LENGTHS)
def test_lengths_and_causal(lq, lk, causal, d):
    q, k, v = make_qkv(lq=lq, lk=lk, d=d)
    _run(q, k, v, causal=causal, check_reference=lk >= 130)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gran", ["per_thread", "per_warp"])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("d", [64, 128])
def test_layouts_granularities_dtypes(d, layout, gran, dtype):
    q, k, v = make_qkv(b=2, hq=4, hkv=4, lq=200, lk=333, d=d, layout=layout, dtype=dtype)
    _run(q, k, v, layout=layout, gran=gran, causal=True)


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_8_to_1(causal):
    q, k, v = make_qkv(b=2, hq=16, hkv=2, lq=257, lk=257, d=128)
    _run(q, k, v, causal=causal)


@pytest.mark.parametrize("causal", [False, True])
def test_real_size_vs_emulation(causal):
    q, k, v = make_qkv(b=2, hq=8, hkv=8, lq=2048, lk=2048, d=128, dtype=torch.bfloat16)
    _run(q, k, v, causal=causal)


@pytest.mark.parametrize("k_bias", [0.0, 4.0], ids=["randn", "channel-biased-k"])
def test_accuracy_at_4k(k_bias):
    """hd128, L = 4096: the FP8 scheme's floors (TOLERANCES), as for the sm89 kernel."""
    q, k, v = make_qkv(b=1, hq=8, hkv=8, lq=4096, lk=4096, d=128, dtype=torch.bfloat16, k_bias=k_bias)
    _run(q, k, v, kind="biased_k" if k_bias else "randn", return_lse=False)


def test_outliers_stay_finite():
    q, k, v = make_qkv(b=1, hq=2, hkv=2, lq=512, lk=512, d=128, k_bias=20.0)
    for t in (q, k, v):
        t[torch.rand(t.shape, device="cuda") < 0.002] = 1e4
    qi, qs, ki, ks, _ = quantize_qk(q, k, "HND", "per_thread")
    v8, vs = quant_per_channel_fp8_ref(v, tensor_layout="HND", scale_max=FP8_V_SCALE_MAX[ACCUM])
    out, lse = _ops.qk_int8_sv_f8_attn_sm90(qi, ki, _ops.fp8_v_operand(v8, "HND"), vs, qs, ks, return_lse=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()


def test_production_quantizers_match_the_sm89_kernel():
    """api._cuda_quantize (the Triton quantizers the public functions use) feeds this op unchanged;
    where the build also has the sm89 op (an "8.9+PTX" build on the H100) both kernels agree."""
    from sageattention import api

    q, k, v = make_qkv(b=2, hq=8, hkv=2, lq=777, lk=1100, d=128, dtype=torch.bfloat16)
    ops = api._cuda_quantize(q, k, v, tensor_layout="HND", qk_quant_gran="per_thread", sm_scale=128 ** -0.5,
                             pv_accum_dtype=ACCUM, smooth_k=True, smooth_v=False, pv="fp8", d=128, d_pad=128)
    args = (ops.q_i8, ops.k_i8, ops.v, ops.v_scale, ops.q_scale, ops.k_scale)
    out, lse = _ops.qk_int8_sv_f8_attn_sm90(*args, is_causal=True, output_dtype=q.dtype, return_lse=True)
    assert torch.isfinite(out).all()
    from sageattention import _support

    if "qk_int8_sv_f8_attn" in _support.built_cuda_ops():
        ref, ref_lse = _ops.qk_int8_sv_f8_attn(*args, is_causal=True, output_dtype=q.dtype, return_lse=True,
                                               pv_accum_dtype=ACCUM)
        err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
        assert err <= 2e-2, f"sm90 vs sm89 kernel: max rel err {err:.3e}"
        assert (lse - ref_lse).abs().max().item() <= 1e-3


# ---- schedule variants (experiment builds: NVCC_APPEND_FLAGS=-DSAGEATTN_SM90_VARIANTS) -------

VARIANT_ENV = "SAGEATTN_SM90_VARIANT"
#: Reorderings (late O update, tree row max, late wait for R_{j-1}): the same arithmetic, so every
#: output bit equals variant 0's. Variants with bit 8 take a quarter of the exps from exp2_poly
#: (relative error <= 3e-6, tests/test_exp2_poly.py): held to the emulation like variant 0. 4 and 5
#: are timing-only ablations (no exp2, wrong results) and are not tested for values.
EXACT_VARIANTS = (1, 2, 3, 16, 17)
POLY_VARIANTS = (8, 9, 25)


def _set_variant(monkeypatch, variant: int) -> None:
    """Select the variant for the next launches (read at every launch); skip on a default build."""
    monkeypatch.setenv(VARIANT_ENV, str(variant))
    args = fp8_op_args()
    try:
        torch.ops.sageattention.qk_int8_sv_f8_attn_sm90(*args)
    except RuntimeError as err:
        if "is not a schedule variant of this build" in str(err):
            pytest.skip(f"default build (variant 0 only): {err}")
        raise


@pytest.mark.parametrize("value", ["7", "32", "-1", "4294967297", "1x", "one"])
def test_unknown_schedule_variant_is_refused(monkeypatch, value):
    monkeypatch.setenv(VARIANT_ENV, value)
    with pytest.raises(RuntimeError, match=f"SAGEATTN_SM90_VARIANT='{value}' is not a schedule variant"):
        torch.ops.sageattention.qk_int8_sv_f8_attn_sm90(*fp8_op_args())


def test_unset_and_zero_variant_are_accepted_and_agree(monkeypatch):
    args = fp8_op_args()
    monkeypatch.delenv(VARIANT_ENV, raising=False)
    torch.ops.sageattention.qk_int8_sv_f8_attn_sm90(*args)
    unset = (args[4].clone(), args[7].clone())
    monkeypatch.setenv(VARIANT_ENV, "0")
    torch.ops.sageattention.qk_int8_sv_f8_attn_sm90(*args)
    assert torch.equal(args[4], unset[0]) and torch.equal(args[7], unset[1])


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [64, 128])
def test_reordering_variants_change_no_bit(monkeypatch, variant, causal, d):
    q, k, v = make_qkv(b=2, hq=4, hkv=2, lq=300, lk=1000, d=d)  # tails, GQA, 8 KV steps
    qi, qs, ki, ks, _ = quantize_qk(q, k, "HND", "per_thread")
    v8, vs = quant_per_channel_fp8_ref(v, tensor_layout="HND", scale_max=FP8_V_SCALE_MAX[ACCUM])
    args = (qi, ki, _ops.fp8_v_operand(v8, "HND"), vs, qs, ks)
    monkeypatch.setenv(VARIANT_ENV, "0")
    want, want_lse = _ops.qk_int8_sv_f8_attn_sm90(*args, is_causal=causal, return_lse=True)
    _set_variant(monkeypatch, variant)
    out, lse = _ops.qk_int8_sv_f8_attn_sm90(*args, is_causal=causal, return_lse=True)
    assert torch.equal(out, want), f"variant {variant}: {(out.float() - want.float()).abs().max().item():.3e} max |diff|"
    assert torch.equal(lse, want_lse)


@pytest.mark.parametrize("variant", POLY_VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk", [(17, 130), (300, 1000)])
def test_poly_exp_variants_match_the_emulation(monkeypatch, variant, causal, lq, lk):
    _set_variant(monkeypatch, variant)
    q, k, v = make_qkv(b=2, hq=4, hkv=2, lq=lq, lk=lk, d=128)
    _run(q, k, v, causal=causal)


# ---- registration and bad input --------------------------------------------------------------


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("return_lse", [True, False])
def test_opcheck(layout, return_lse):
    """opcheck without test_schema (torch.allclose has no float8_e4m3fn kernel; see
    test_qk_int8_sv_f8_attn_cuda.py::test_opcheck), plus that check done by hand on the bytes."""
    op = torch.ops.sageattention.qk_int8_sv_f8_attn_sm90.default
    args = fp8_op_args(layout, return_lse)
    torch.library.opcheck(op, tuple(args),
                          test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))
    check_schema_by_bytes(op, args)


@pytest.mark.parametrize(
    "index,bad,message",
    [*FP8_OP_BAD_INPUTS, (12, lambda t: "fp32+fp16", "pv_accum_dtype")],
)
def test_the_op_rejects_bad_input(index, bad, message):
    args = fp8_op_args()
    args[index] = bad(args[index])
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sageattention.qk_int8_sv_f8_attn_sm90(*args)


# ---- public entry point ----------------------------------------------------------------------


@pytest.mark.parametrize("d", [32, 64, 72, 128])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_api_head_dims_gqa_and_lse(layout, d):
    import sageattention

    check_public_head_dims_gqa_and_lse(sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90, layout, d,
                                       ("int8", "fp8", ACCUM))


def test_api_non_contiguous_inputs():
    import sageattention

    check_public_non_contiguous_inputs(sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90)


def test_sageattn_on_sm90_uses_the_measured_faster_kernel():
    """Dispatch on the H100 follows _support.SAGEATTN_PREFERENCE: this kernel first (measured faster)."""
    from sageattention import _support

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the preference checked here is sm90's")
    first = _support.SAGEATTN_PREFERENCE[(9, 0)][0][0]
    chosen = _support.select_kernel((9, 0), _support.built_cuda_ops(), _support.installed_triton_version(),
                                    _support.built_op_archs())
    assert chosen.name == first == "sageattn_qk_int8_pv_fp8_cuda_sm90"
