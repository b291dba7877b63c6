"""Triton per-warp / per-thread INT8 quantizers vs the PyTorch emulation (reference.py)."""

from __future__ import annotations

import pytest
import torch

from sageattention.testing.reference import LOG2E, quant_per_thread_int8_ref, quant_per_warp_int8_ref
from sageattention.triton.quant_per_block_int8 import mean_over_tokens
from sageattention.triton.quant_per_thread_int8 import quant_per_thread_int8, quant_per_warp_int8


def _pair(layout, length, device):
    shape = (2, 2, length, 64) if layout == "HND" else (2, length, 2, 64)
    q = torch.randn(shape, device=device).to(torch.float16)
    k = (torch.randn(shape, device=device) + 2.0).to(torch.float16)
    return q, k


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", [1, 33, 130])
def test_per_thread_matches_emulation(layout, length, device):
    q, k = _pair(layout, length, device)
    q_i8, q_s, k_i8, k_s, k_mean = quant_per_thread_int8_ref(q, k, tensor_layout=layout)
    got_q, got_qs = quant_per_thread_int8(q, block=128, warp=32, groups_per_warp=8, tensor_layout=layout)
    # Given the reference's K mean the kernel is bit-exact (same fp32 ops, div_rn).
    got_k, got_ks = quant_per_thread_int8(k, block=64, warp=64, groups_per_warp=4, mean=k_mean, tensor_layout=layout)
    assert got_qs.shape == q_s.shape and got_ks.shape == k_s.shape
    for got, want in ((got_qs, q_s), (got_ks, k_s), (got_q, q_i8), (got_k, k_i8)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # With the Triton mean (last-ulp differences from torch's): within one rounding step.
    got_k, _ = quant_per_thread_int8(k, block=64, warp=64, groups_per_warp=4,
                                     mean=mean_over_tokens(k, tensor_layout=layout), tensor_layout=layout)
    assert (got_k.int() - k_i8.int()).abs().max().item() <= 1, "K: more than one rounding step"


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_per_warp_matches_emulation(layout, device):
    q, k = _pair(layout, 70, device)
    q_i8, q_s, *_ = quant_per_warp_int8_ref(q, k, tensor_layout=layout, warpq=16)
    got, got_s = quant_per_warp_int8(q, block=128, warp=16, pre_scale=64**-0.5 * LOG2E, tensor_layout=layout)
    assert got_s.shape == (2, 2, 8)  # padded to a whole 128-row tile
    torch.testing.assert_close(got_s, q_s, rtol=0, atol=0)
    torch.testing.assert_close(got, q_i8, rtol=0, atol=0)


def test_per_thread_groups_are_the_mma_rows(device):
    # One outlier row per group pattern: only its own group's scale may grow.
    x = torch.ones(1, 1, 32, 16, device=device)
    x[0, 0, 3] = 100.0  # Q group r mod 8 == 3
    _, scale = quant_per_thread_int8(x, block=32, warp=32, groups_per_warp=8)
    assert scale[0, 0].argmax().item() == 3 and (scale[0, 0] > 2 / 127).sum().item() == 1
    _, kscale = quant_per_thread_int8(x, block=32, warp=32, groups_per_warp=4)
    assert kscale[0, 0].argmax().item() == 1  # rows 2, 3 (mod 8) -> group 1
