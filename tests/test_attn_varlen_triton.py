"""Triton varlen kernel (``sageattention.triton.attn_varlen``): packed sequences, per-sequence scales.

Each sequence is quantized on its own (K smoothed by its own mean, groups restarting at its first
token), packed along the token axis, and the packed result must match the dense emulation and the
float64 reference of every sequence separately.
"""

from __future__ import annotations

import pytest
import torch

import sageattention.triton.attn_qk_int8_pv_fp16 as fp16_mod
from sageattention.testing.emulation import attn_qk_int8_pv_fp16_emulated, emulation_error
from sageattention.testing.metrics import assert_close_to_reference
from sageattention.testing.reference import attention_ref, quant_per_block_int8_ref
from sageattention.triton.attn_qk_int8_pv_fp16 import _attn_qk_int8_kernel
from sageattention.triton.attn_varlen import attn_varlen_qk_int8_pv_fp16


def pack(device, lens_q, lens_k, *, hq=4, hkv=2, d=64, q_group=128, k_group=64):
    """Random sequences, quantized one by one, packed into [T, H, D] with padded per-sequence scales."""
    seqs = []
    for lq, lk in zip(lens_q, lens_k):
        q = torch.randn(1, lq, hq, d, device=device).half()
        k = torch.randn(1, lk, hkv, d, device=device).half()
        v = torch.randn(1, lk, hkv, d, device=device).half()
        qi, qs, ki, ks, _ = quant_per_block_int8_ref(q, k, tensor_layout="NHD", blkq=q_group, blkk=k_group)
        seqs.append((q, k, v, qi, qs, ki, ks))
    b = len(seqs)
    gq, gk = -(-max(lens_q) // q_group), -(-max(lens_k) // k_group)
    q_scale = torch.zeros(b, hq, max(gq, 1), device=device)
    k_scale = torch.zeros(b, hkv, max(gk, 1), device=device)
    for i, s in enumerate(seqs):
        q_scale[i, :, : s[4].shape[-1]] = s[4][0]
        k_scale[i, :, : s[6].shape[-1]] = s[6][0]
    cat = lambda j: torch.cat([s[j][0] for s in seqs])  # noqa: E731
    cu = lambda lens: torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32, device=device)  # noqa: E731
    return seqs, cat(3), cat(5), cat(2), q_scale, k_scale, cu(lens_q), cu(lens_k)


@pytest.mark.parametrize("use_tma", [False, True], ids=["pointer-loads", "tensor-descriptors"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "lens_q,lens_k",
    [([1, 17, 65], [1, 17, 65]), ([40, 3, 130], [40, 50, 20]), ([64], [64])],
    ids=["self", "cross", "single"],
)
def test_packed_sequences_match_per_sequence_attention(device, monkeypatch, lens_q, lens_k, causal, use_tma):
    monkeypatch.setattr(fp16_mod, "FORCE_TMA", use_tma)
    seqs, qi, ki, v, q_scale, k_scale, cu_q, cu_k = pack(device, lens_q, lens_k)
    out = attn_varlen_qk_int8_pv_fp16(qi, ki, v, q_scale, k_scale, cu_q, cu_k, max(lens_q), max(lens_k),
                                      is_causal=causal)
    assert out.shape == qi.shape and out.dtype == torch.float16
    assert torch.isfinite(out).all()
    block_n = _attn_qk_int8_kernel.best_config.kwargs["BLOCK_N"]
    for i, (q, k, vs, qis, qss, kis, kss) in enumerate(seqs):
        got = out[cu_q[i]: cu_q[i + 1]][None]
        emu, _ = attn_qk_int8_pv_fp16_emulated(qis, kis, vs, qss, kss, tensor_layout="NHD", is_causal=causal,
                                               block_n=block_n)
        _, failure = emulation_error(got, emu, "fp32")
        assert failure is None, f"sequence {i}: {failure}"
        if k.shape[1] > 1:
            ref, _ = attention_ref(q, k, vs, tensor_layout="NHD", is_causal=causal)
            assert_close_to_reference(got, ref, scheme=("int8", "fp16", "fp32"), emulated=emu,
                                      context=f"varlen sequence {i}")


def test_fp16_only_and_bad_cu_seqlens(device):
    seqs, qi, ki, v, q_scale, k_scale, cu_q, cu_k = pack(device, [8, 8], [8, 8])
    with pytest.raises(TypeError, match="v must be a float16"):
        attn_varlen_qk_int8_pv_fp16(qi, ki, v.bfloat16(), q_scale, k_scale, cu_q, cu_k, 8, 8)
    with pytest.raises(TypeError, match="cu_seqlens_q"):
        attn_varlen_qk_int8_pv_fp16(qi, ki, v, q_scale, k_scale, cu_q.long(), cu_k, 8, 8)
    with pytest.raises(ValueError, match="cu_seqlens_q and cu_seqlens_k"):
        attn_varlen_qk_int8_pv_fp16(qi, ki, v, q_scale, k_scale, cu_q, cu_k[:2], 8, 8)
    with pytest.raises(ValueError, match="q_scale"):
        attn_varlen_qk_int8_pv_fp16(qi, ki, v, q_scale[:1], k_scale, cu_q, cu_k, 8, 8)
    with pytest.raises(ValueError, match="q_int8 must be 3-D"):
        attn_varlen_qk_int8_pv_fp16(qi[None], ki, v, q_scale, k_scale, cu_q, cu_k, 8, 8)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_real_sizes(causal):
    seqs, qi, ki, v, q_scale, k_scale, cu_q, cu_k = pack("cuda", [1000, 4096, 77], [1000, 4096, 77], hq=8, hkv=8, d=128)
    out = attn_varlen_qk_int8_pv_fp16(qi, ki, v, q_scale, k_scale, cu_q, cu_k, 4096, 4096, is_causal=causal)
    block_n = _attn_qk_int8_kernel.best_config.kwargs["BLOCK_N"]
    for i, (q, k, vs, qis, qss, kis, kss) in enumerate(seqs):
        got = out[cu_q[i]: cu_q[i + 1]][None]
        emu, _ = attn_qk_int8_pv_fp16_emulated(qis, kis, vs, qss, kss, tensor_layout="NHD", is_causal=causal,
                                               block_n=block_n)
        _, failure = emulation_error(got, emu, "fp32")
        assert failure is None, f"sequence {i}: {failure}"
        ref, _ = attention_ref(q, k, vs, tensor_layout="NHD", is_causal=causal)
        assert_close_to_reference(got, ref, scheme=("int8", "fp16", "fp32"), emulated=emu, context=f"varlen {i}")
