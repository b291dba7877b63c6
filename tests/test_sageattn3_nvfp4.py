"""NVFP4 quantizer emulation (sageattn3.nvfp4): E2M1 and E4M3 rounding, block scales, round trips."""

from __future__ import annotations


import pytest
import torch

# sageattn3 lives in its own package directory (a separate distribution); make it importable in-tree.
from sageattn3.nvfp4 import (
    BLOCK,
    E2M1_MAX,
    dequantize_nvfp4,
    fake_quant_nvfp4,
    quantize_nvfp4,
    round_to_e2m1,
    round_to_e4m3,
)

E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _e2m1_brute_force(x: torch.Tensor) -> torch.Tensor:
    """Nearest grid value by exhaustive search; a tie goes to the value with mantissa bit 0.

    Mantissa bit 0 in the E2M1 encoding: {0, 1, 2, 4}; mantissa bit 1: {0.5, 1.5, 3, 6}.
    """
    even = torch.tensor([True, False, True, False, True, False, True, False])
    a = x.abs().clamp(max=E2M1_MAX)
    dist = (a[:, None] - E2M1_GRID[None, :]).abs()
    best = dist.min(dim=1, keepdim=True).values
    # Among the nearest values, prefer an even one (exact float comparisons: all values are dyadic).
    candidates = (dist == best) & (even[None, :] | (dist == best).sum(dim=1, keepdim=True).eq(1))
    idx = candidates.float().argmax(dim=1)
    return torch.copysign(E2M1_GRID[idx], x)


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.0, 0.0), (0.24, 0.0), (0.25, 0.0), (0.26, 0.5), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0),
        (2.5, 2.0), (2.51, 3.0), (3.5, 4.0), (4.9, 4.0), (5.0, 4.0), (5.01, 6.0), (6.0, 6.0),
        (7.0, 6.0), (1e9, 6.0), (-0.75, -1.0), (-5.0, -4.0), (-100.0, -6.0),
    ],
)
def test_e2m1_known_values_ties_to_even(value, expected):
    got = round_to_e2m1(torch.tensor([value]))
    torch.testing.assert_close(got, torch.tensor([expected]), rtol=0, atol=0)


def test_e2m1_matches_brute_force_on_a_dense_grid():
    # Every multiple of 1/64 in [-8, 8] (hits every tie exactly) plus random values.
    x = torch.cat([torch.arange(-512, 513) / 64.0, torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3])
    torch.testing.assert_close(round_to_e2m1(x), _e2m1_brute_force(x), rtol=0, atol=0)


def test_e2m1_grid_values_are_fixed_points():
    grid = torch.cat([E2M1_GRID, -E2M1_GRID])
    torch.testing.assert_close(round_to_e2m1(grid), grid, rtol=0, atol=0)


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.1, 0.1015625),          # 1.625 · 2^-4: nearest E4M3
        (448.0, 448.0),
        (500.0, 448.0),            # saturates (satfinite), no NaN
        (-1e6, -448.0),
        (2.0 ** -9, 2.0 ** -9),    # smallest subnormal kept
        (2.0 ** -10, 0.0),         # exact tie between 0 and 2^-9: to even (0)
        (3 * 2.0 ** -11, 2.0 ** -9),
        (1.0625, 1.0),             # tie between 1.0 and 1.125: to even mantissa (1.0)
        (1.1875, 1.25),            # tie between 1.125 and 1.25: to even mantissa (1.25)
    ],
)
def test_e4m3_known_values(value, expected):
    torch.testing.assert_close(round_to_e4m3(torch.tensor([value])), torch.tensor([expected]), rtol=0, atol=0)


def test_block_scale_is_rounded_to_e4m3_before_the_reciprocal():
    # Block max 0.6 -> scale 0.1 in float32, 0.1015625 after E4M3 rounding.
    # 0.35 / 0.1 = 3.5 would round to 4; 0.35 / 0.1015625 = 3.446 rounds to 3.
    x = torch.zeros(BLOCK)
    x[0], x[1] = 0.6, 0.35
    codes, scales = quantize_nvfp4(x)
    torch.testing.assert_close(scales, torch.tensor([0.1015625]), rtol=0, atol=0)
    assert codes[0].item() == 6.0 and codes[1].item() == 3.0


def test_scales_and_codes_follow_the_contract():
    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(2)) * 10
    codes, scales = quantize_nvfp4(x)
    assert codes.shape == (3, 5, 48) and scales.shape == (3, 5, 3)
    padded = torch.nn.functional.pad(x, (0, 8)).view(3, 5, 3, BLOCK)
    torch.testing.assert_close(scales, round_to_e4m3(padded.abs().amax(-1) / 6), rtol=0, atol=0)
    torch.testing.assert_close(round_to_e2m1(codes), codes, rtol=0, atol=0)
    assert codes[..., 40:].abs().max().item() == 0.0


def test_zero_block_gives_zero_scale_and_codes():
    x = torch.zeros(2, 32)
    x[1, 16:] = torch.arange(16) - 7.5
    codes, scales = quantize_nvfp4(x)
    assert scales[0].abs().max().item() == 0.0 and scales[1, 0].item() == 0.0
    assert torch.isfinite(codes).all() and codes[0].abs().max().item() == 0.0
    assert torch.isfinite(fake_quant_nvfp4(x)).all()


def test_representable_tensor_round_trips_exactly():
    gen = torch.Generator().manual_seed(3)
    codes = round_to_e2m1(torch.randn(4, 8, BLOCK, generator=gen) * 3)
    codes[..., 0] = 6.0  # each block's max code is 6, so scale = max / 6 reproduces the E4M3 scale
    scales = round_to_e4m3(torch.rand(4, 8, generator=gen) * 10 + 0.01)
    x = (codes * scales[..., None]).reshape(4, 8 * BLOCK)
    torch.testing.assert_close(fake_quant_nvfp4(x), x, rtol=0, atol=0)
    c2, s2 = quantize_nvfp4(x)
    torch.testing.assert_close(dequantize_nvfp4(c2, s2, x.shape[-1]), x, rtol=0, atol=0)


def test_quantization_along_another_dim_equals_transposed_quantization():
    x = torch.randn(2, 3, 37, 20, generator=torch.Generator().manual_seed(4))
    along_tokens = fake_quant_nvfp4(x, dim=-2)
    transposed = fake_quant_nvfp4(x.transpose(-1, -2), dim=-1).transpose(-1, -2)
    assert along_tokens.shape == x.shape
    torch.testing.assert_close(along_tokens, transposed, rtol=0, atol=0)


def test_error_is_within_half_a_grid_step_of_the_block_scale():
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(5))
    codes, scales = quantize_nvfp4(x)
    deq = dequantize_nvfp4(codes, scales, 128)
    # Largest E2M1 gap is 2 (between 4 and 6), plus the E4M3 scale error (≤ 2^-4 relative) at the block max.
    err = (deq - x).abs().view(64, 8, BLOCK).amax(-1)
    bound = scales * 1.0 + (x.view(64, 8, BLOCK).abs().amax(-1) * 2.0 ** -4)
    assert (err <= bound).all()


@pytest.mark.parametrize("factor", [4.0, -4.0, 0.25, -1.0])
def test_quantization_is_odd_and_equivariant_under_powers_of_two(factor):
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(6))
    # Scaling by a power of two keeps every block scale in E4M3's normal range here (|x| < 5),
    # so only exponents change and the result scales exactly.
    torch.testing.assert_close(fake_quant_nvfp4(factor * x), factor * fake_quant_nvfp4(x), rtol=0, atol=0)
