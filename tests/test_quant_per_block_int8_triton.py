"""Triton per-block INT8 quantizer and K-mean kernel vs the PyTorch emulation (reference.py)."""

from __future__ import annotations

import pytest
import torch

from sageattention.testing.reference import LOG2E, quant_int8_groups, quant_per_block_int8_ref, to_hnd
from sageattention.triton.quant_per_block_int8 import mean_over_tokens, quant_per_block_int8


def _make(shape_hnd, layout, dtype, device, strided=False):
    b, h, n, d = shape_hnd
    full = (b, h, n, 2 * d) if strided else (b, h, n, d)
    if layout == "NHD":
        full = (full[0], full[2], full[1], full[3])
    x = torch.randn(full, dtype=torch.float32, device=device).to(dtype)
    return x[..., ::2] if strided else x  # strided: last dim not contiguous


def assert_exact(got, want):
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def assert_int8_within_one_step(got, want, msg):
    diff = (got.int() - want.int()).abs()
    assert diff.max().item() <= 1, f"{msg}: int8 differs by {diff.max().item()} (> one rounding step)"


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", [1, 17, 130])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_per_block_matches_emulation(layout, length, dtype, device):
    q = _make((2, 3, length, 72), layout, dtype, device)
    k = _make((2, 1, length, 72), layout, dtype, device) + 3.0  # channel bias: smoothing matters
    q_i8, q_s, k_i8, k_s, k_mean = quant_per_block_int8_ref(q, k, tensor_layout=layout)
    mean = mean_over_tokens(k, tensor_layout=layout)
    torch.testing.assert_close(mean, k_mean, rtol=1e-6, atol=1e-6)
    got_q, got_qs = quant_per_block_int8(q, block_size=128, pre_scale=72**-0.5 * LOG2E, tensor_layout=layout)
    # Same fp32 operations, IEEE-rounded divisions (div_rn): bit-exact, so a rounding-mode bug
    # (half-to-even, truncation) cannot hide inside a one-step allowance.
    assert_exact(got_qs, q_s)
    assert_exact(got_q, q_i8)
    got_k, got_ks = quant_per_block_int8(k, block_size=64, mean=k_mean, tensor_layout=layout)
    assert_exact(got_ks, k_s)
    assert_exact(got_k, k_i8)
    # With the kernel's own mean (last-ulp differences from torch's mean): within one step.
    got_k, got_ks = quant_per_block_int8(k, block_size=64, mean=mean, tensor_layout=layout)
    torch.testing.assert_close(got_ks, k_s, rtol=1e-6, atol=1e-7)
    assert_int8_within_one_step(got_k, k_i8, "K")


def test_padding_columns_are_zero_and_strided_input(device):
    x = _make((1, 2, 65, 40), "NHD", torch.float16, device, strided=True)
    assert x.stride(-1) != 1
    got, scale = quant_per_block_int8(x, block_size=32, tensor_layout="NHD", head_dim_out=64)
    want, want_scale = quant_int8_groups(to_hnd(x, "NHD").float(), 32)
    assert got.shape == (1, 65, 2, 64)
    assert torch.equal(got[..., 40:], torch.zeros_like(got[..., 40:]))
    assert_exact(got[..., :40].transpose(1, 2), want)
    assert_exact(scale, want_scale)


def test_zero_group_has_zero_scale(device):
    x = torch.zeros(1, 1, 70, 64, dtype=torch.float16, device=device)
    x[:, :, 64:] = 1.0
    got, scale = quant_per_block_int8(x, block_size=64)
    assert scale[0, 0, 0].item() == 0.0 and scale[0, 0, 1].item() == pytest.approx(1 / 127)
    assert torch.equal(got[:, :, :64], torch.zeros_like(got[:, :, :64]))
    assert torch.equal(got[:, :, 64:], torch.full_like(got[:, :, 64:], 127))


def test_varlen_groups_restart_per_sequence(device):
    lengths = [5, 70, 0, 33]
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=device)
    x = torch.randn(sum(lengths), 2, 64, device=device).to(torch.float16) + 1.0
    mean = mean_over_tokens(x, cu_seqlens=cu, max_seqlen=max(lengths))
    got, scale = quant_per_block_int8(x, block_size=32, mean=mean, cu_seqlens=cu, max_seqlen=max(lengths))
    assert scale.shape == (4, 2, 3)
    start = 0
    for i, n in enumerate(lengths):
        seq = x[start : start + n].transpose(0, 1)[None].float()  # [1, H, n, D]
        if n:
            torch.testing.assert_close(mean[i], seq.mean(dim=2)[0][:, None], rtol=1e-6, atol=1e-6)
            want, want_scale = quant_int8_groups(seq - mean[i : i + 1], 32)
            assert_int8_within_one_step(got[start : start + n].transpose(0, 1)[None], want, f"sequence {i}")
            torch.testing.assert_close(scale[i, :, : want_scale.shape[-1]], want_scale[0], rtol=1e-6, atol=1e-7)
        assert torch.all(scale[i, :, -(-n // 32):] == 0), "scales past a sequence's end must be 0"
        start += n


def test_bad_arguments():
    x = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="block_size"):
        quant_per_block_int8(x, block_size=48)
    with pytest.raises(ValueError, match="tensor_layout"):
        quant_per_block_int8(x, block_size=64, tensor_layout="BHSD")
    with pytest.raises(ValueError, match="head_dim_out"):
        quant_per_block_int8(x, block_size=64, head_dim_out=4)
