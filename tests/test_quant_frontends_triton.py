"""Upstream-named helpers in ``sageattention.quant`` (thin front-ends over the Triton quantizers)."""

from __future__ import annotations

import torch

from sageattention import quant
from sageattention.testing.reference import (
    quant_per_block_int8_ref,
    quant_per_warp_int8_ref,
    quant_v_per_channel_fp8_ref,
    to_hnd,
)


def _one_step(a, b):
    return (a.int() - b.int()).abs().max().item() <= 1


def test_per_block_int8_with_upstream_km_in_nhd(device):
    q = torch.randn(1, 70, 2, 64, device=device).to(torch.float16)
    k = (torch.randn(1, 70, 2, 64, device=device) + 1).to(torch.float16)
    km = k.float().mean(dim=1, keepdim=True)  # upstream passes the mean in k's layout
    q_i8, q_s, k_i8, k_s = quant.per_block_int8(q, k, km=km, sm_scale=0.2, tensor_layout="NHD")
    rq, rqs, rk, rks, _ = quant_per_block_int8_ref(q, k, tensor_layout="NHD", sm_scale=0.2)
    assert q_i8.shape == q.shape and q_s.shape == (1, 2, 1) and k_s.shape == (1, 2, 2)
    assert _one_step(q_i8, rq) and _one_step(k_i8, rk)
    torch.testing.assert_close(q_s, rqs, rtol=1e-6, atol=0)
    torch.testing.assert_close(k_s, rks, rtol=1e-5, atol=1e-7)


def test_per_warp_int8_does_not_fold_sm_scale(device):
    q = torch.randn(1, 2, 70, 64, device=device).to(torch.float16)
    k = torch.randn(1, 2, 70, 64, device=device).to(torch.float16)
    q_i8, q_s, k_i8, k_s = quant.per_warp_int8(q, k, WARPQ=32)
    rq, rqs, *_ = quant_per_warp_int8_ref(q, k, fold_sm_scale=False)
    assert q_s.shape == (1, 2, 4)
    torch.testing.assert_close(q_s, rqs, rtol=1e-6, atol=0)
    assert _one_step(q_i8, rq)


def test_sub_mean_and_per_channel_fp8(device):
    v = (torch.randn(2, 2, 33, 64, device=device) + 2).to(torch.bfloat16)
    smoothed, vm = quant.sub_mean(v)
    assert smoothed.dtype == torch.float16 and vm.shape == (2, 2, 64)
    torch.testing.assert_close(smoothed.float().mean(dim=2), torch.zeros(2, 2, 64, device=device), rtol=0, atol=2e-3)
    v8, scale, vm8 = quant.per_channel_fp8(v, smooth_v=True)
    rv8, rscale, rmean = quant_v_per_channel_fp8_ref(v, smooth_v=True)
    assert v8.shape == v.shape and scale.shape == (2, 2, 64) and vm8.shape == (2, 2, 64)
    torch.testing.assert_close(scale, rscale, rtol=1e-5, atol=0)
    torch.testing.assert_close(vm8, to_hnd(rmean, "HND")[:, :, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v8.float(), rv8.float(), rtol=2**-3, atol=2**-9)
