"""PyTorch emulation of NVFP4 microscaling quantization (SageAttention3 paper §3.1, Eq. 1-2).

NVFP4 stores each value as FP4 E2M1 (grid ``{0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6}``) and one
FP8 E4M3 scale per block of 16 consecutive elements along the *reduction* dimension of the
matmul that consumes it (the head dim for Q and K, the token dim for P and V).

Quantizer φ for one block ``x`` (what the Blackwell kernels will compute):

1. ``scale = round_e4m3(max|x| / 6)``: the scale is rounded to E4M3 *first* (saturating at 448),
   because the hardware reads the E4M3 scale, not the float32 one;
2. ``codes = round_e2m1(x * (1 / scale))``: the reciprocal of the *rounded* scale, so that
   ``codes * scale`` is exactly what the block-scaled MMA multiplies; an all-zero block (or one
   whose scale rounds to 0) gives scale 0 and codes 0;
3. dequantized value ``codes * scale``.

Rounding choices (both as PTX ``cvt.rn.satfinite``): E2M1 rounds to nearest with ties to even
(mantissa bit 0), saturating at ±6; E4M3 rounds to nearest even, saturating at ±448. Codes are
kept as float32 holding E2M1 values (an emulation, not a packed format).
"""

from __future__ import annotations

import torch

#: Largest E2M1 magnitude; a block's absmax maps onto it.
E2M1_MAX = 6.0
#: Largest finite E4M3 (``float8_e4m3fn``) magnitude.
E4M3_MAX = 448.0
#: Elements per NVFP4 scale block.
BLOCK = 16


def round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round float32 ``x`` to the nearest E2M1 value, ties to even, saturating at ±6.

    The E2M1 grid has step 0.5 on [0, 2), 1 on [2, 4) and 2 on [4, 6]; on each segment
    ``torch.round`` (round half to even) of ``|x| / step`` lands on the value whose mantissa bit
    is 0 at a tie: 0.25 → 0, 0.75 → 1, 1.25 → 1, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4.

    Parameters
    ----------
    x : torch.Tensor
        Any shape, float32.

    Returns
    -------
    torch.Tensor
        Same shape and dtype, every element in the E2M1 grid.
    """
    a = x.abs().clamp(max=E2M1_MAX)
    fine = torch.round(a * 2.0) * 0.5      # step 0.5 below 2
    mid = torch.round(a)                   # step 1 on [2, 4)
    coarse = torch.round(a * 0.5) * 2.0    # step 2 on [4, 6]
    mag = torch.where(a < 2.0, fine, torch.where(a < 4.0, mid, coarse)).clamp(max=E2M1_MAX)
    return torch.copysign(mag, x)


def round_to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Round float32 ``x`` to the nearest ``float8_e4m3fn`` value (ties to even), saturating at ±448.

    Subnormals are kept (smallest positive value ``2**-9``), as in the hardware conversion.
    """
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)


def quantize_nvfp4(x: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to NVFP4 with 1×16 blocks along ``dim``.

    Parameters
    ----------
    x : torch.Tensor
        Float tensor of any shape; converted to float32.
    dim : int
        The reduction dimension; zero-padded to a multiple of 16 (zeros do not change a block max).

    Returns
    -------
    codes : torch.Tensor
        float32, ``x``'s shape with ``dim`` padded to ``16 * ceil(n / 16)``, at ``dim`` moved last;
        every element in the E2M1 grid.
    scales : torch.Tensor
        float32 holding E4M3 values, shape ``[..., ceil(n / 16)]`` (``dim`` moved last, then blocks).
    """
    xt = x.to(torch.float32).movedim(dim, -1)
    n = xt.shape[-1]
    pad = (-n) % BLOCK
    if pad:
        xt = torch.nn.functional.pad(xt, (0, pad))
    blocks = xt.reshape(*xt.shape[:-1], xt.shape[-1] // BLOCK, BLOCK)
    scales = round_to_e4m3(blocks.abs().amax(dim=-1) / E2M1_MAX)
    # Reciprocal of the *rounded* scale (SageAttention3 quantization kernel); 0 for empty blocks.
    recip = torch.where(scales > 0, 1.0 / scales, torch.zeros_like(scales))
    codes = round_to_e2m1(blocks * recip[..., None])
    return codes.reshape(xt.shape), scales


def dequantize_nvfp4(codes: torch.Tensor, scales: torch.Tensor, n: int, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`quantize_nvfp4`: ``codes * scale``, cut back to ``n`` elements, ``dim`` restored."""
    blocks = codes.reshape(*codes.shape[:-1], codes.shape[-1] // BLOCK, BLOCK) * scales[..., None]
    return blocks.reshape(codes.shape)[..., :n].movedim(-1, dim)


def fake_quant_nvfp4(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Quantize then dequantize ``x`` (float32 result, ``x``'s shape): what the FP4 MMA sees."""
    codes, scales = quantize_nvfp4(x, dim)
    return dequantize_nvfp4(codes, scales, x.shape[dim], dim)
