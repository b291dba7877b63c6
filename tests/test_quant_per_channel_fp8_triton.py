"""Triton per-channel FP8 V quantizer vs the PyTorch emulation (reference.py)."""

from __future__ import annotations

import pytest
import torch

from sageattention.testing.reference import quant_v_per_channel_fp8_ref
from sageattention.triton.quant_per_channel_fp8 import quant_per_channel_fp8


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", [1, 17, 130])
@pytest.mark.parametrize("smooth_v", [False, True])
def test_matches_emulation(layout, length, smooth_v, device):
    shape = (2, 3, length, 72) if layout == "HND" else (2, length, 3, 72)
    v = (torch.randn(shape, device=device) * 3 + 1).to(torch.bfloat16)
    want, want_scale, want_mean = quant_v_per_channel_fp8_ref(v, tensor_layout=layout, smooth_v=smooth_v)
    for token_contiguous in (False, True):
        got, scale, mean = quant_per_channel_fp8(
            v, tensor_layout=layout, smooth_v=smooth_v, token_contiguous=token_contiguous
        )
        assert got.dtype == torch.float8_e4m3fn and got.shape == v.shape
        torch.testing.assert_close(scale, want_scale, rtol=1e-6, atol=0)
        if smooth_v:
            torch.testing.assert_close(mean, want_mean, rtol=1e-6, atol=1e-6)
        else:
            assert mean is None
        # Within one e4m3 step: 2^-3 relative at the bottom of a binade, 2^-9 among subnormals
        # (a near-tie can round either way when the mean or the cast path differs by an ulp).
        torch.testing.assert_close(got.float(), want.float(), rtol=2**-3, atol=2**-9)


def test_scale_max_and_padding(device):
    v = torch.randn(1, 2, 40, 48, device=device, dtype=torch.float16)
    got, scale, _ = quant_per_channel_fp8(v, scale_max=2.25, head_dim_out=64)
    assert got.shape == (1, 2, 40, 64)
    assert got.float()[..., :48].abs().amax().item() == 2.25
    assert torch.equal(got.float()[..., 48:], torch.zeros(1, 2, 40, 16, device=device))
    assert torch.all(scale[..., 48:] == 0)
    with pytest.raises(ValueError, match="scale_max"):
        quant_per_channel_fp8(v, scale_max=500.0)
