"""Per-channel FP8 (e4m3) quantization of V, with optional V smoothing (Triton).

Math (research notes §2.3.4, §2.3.6, §2.4): per (batch, head, channel c) over all tokens,

    mean_c  = mean(v[:, c])                     (only with smooth_v; else 0)
    scale_c = max |v[:, c] - mean_c| · fl(1 / scale_max) (fp32; 0 for an all-zero channel)
    v_fp8   = e4m3(clamp((v - mean_c) / scale_c, ±scale_max))   (round to nearest even)

``scale_max`` is 448 (full e4m3 range) for FP32-accumulated P·V and 2.25 for SageAttention2++'s
FP16-accumulated P·V (448·2.25 = 1008 keeps 32 products below fp16's 65504 with delayed
buffering, §2.4).

One statistics pass (``_channel_stats_kernel``, split over token chunks, combined in torch) gets
the sum, max and min of each channel; the absmax of the *smoothed* channel is
``max(max - mean, mean - min)``, exact because fp32 rounding is monotonic, so smoothing costs no
extra pass over V. A second pass
(``_quant_per_channel_fp8_kernel``) writes the e4m3 values.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .quant_per_block_int8 import REDUCTION_CHUNK, _as_bhnd, _d_pad

E4M3_MAX = 448.0


@triton.jit
def _channel_stats_kernel(
    X, SUM, MAX, MIN,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_pb, stride_ph, stride_ps,
    seq_len, head_dim, chunk,
    BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
):
    """Grid ``(H, B, SPLIT)``: per-channel sum, max and min of one chunk of tokens (fp32)."""
    head = tl.program_id(0)
    batch = tl.program_id(1)
    split = tl.program_id(2)
    base = X + batch.to(tl.int64) * stride_xb + head * stride_xh
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, D_PAD)
    col_ok = cols < head_dim
    lo = split * chunk
    hi = tl.minimum(lo + chunk, seq_len)
    vmax = tl.full([BLOCK_N, D_PAD], float("-inf"), dtype=tl.float32)
    vmin = tl.full([BLOCK_N, D_PAD], float("inf"), dtype=tl.float32)
    acc = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        r = start_n + rows
        ok = (r < hi)[:, None] & col_ok[None, :]
        x = tl.load(base + r[:, None].to(tl.int64) * stride_xn + cols[None, :] * stride_xd, mask=ok, other=0.0)
        x = x.to(tl.float32)
        acc += x
        vmax = tl.maximum(vmax, tl.where(ok, x, float("-inf")))
        vmin = tl.minimum(vmin, tl.where(ok, x, float("inf")))
    out = batch * stride_pb + head * stride_ph + split * stride_ps + cols
    tl.store(SUM + out, tl.sum(acc, 0), mask=col_ok)
    tl.store(MAX + out, tl.max(vmax, 0), mask=col_ok)
    tl.store(MIN + out, tl.min(vmin, 0), mask=col_ok)


@triton.jit
def _round_to_e4m3(x):
    """Round fp32 ``x`` (|x| <= 448) to the nearest e4m3 value, ties to even, staying in fp32.

    Used only under ``TRITON_INTERPRET=1``, whose fp32 -> e4m3 cast (Triton 3.8, numpy-based)
    mis-rounds values just below a power of two; on a GPU the cast instruction
    (``cvt.rn.satfinite``) rounds correctly by itself.
    """
    a = tl.abs(x)
    bits = a.to(tl.int32, bitcast=True)
    # Normals (a >= 2^-6): e4m3 keeps 3 of the 23 fp32 mantissa bits -> round the low 20 bits
    # to even.
    lsb = (bits >> 20) & 1
    normal = ((bits + 0x7FFFF + lsb) & ~0xFFFFF).to(tl.float32, bitcast=True)
    # Subnormals: multiples of 2^-9; adding 2^14 (ulp 2^-9 at that magnitude) rounds to even.
    sub = (a + 16384.0) - 16384.0
    r = tl.minimum(tl.where(a < 0.015625, sub, normal), 448.0)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def _quant_per_channel_fp8_kernel(
    X, MEAN, SCALE, OUT,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_mb, stride_mh, stride_sb, stride_sh,
    seq_len, head_dim, head_dim_out, scale_max,
    SMOOTH: tl.constexpr, INTERPRET: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
):
    """Grid ``(ceil(L / BLOCK_N), H, B)``: e4m3 of (v - mean) / scale for BLOCK_N tokens."""
    pid = tl.program_id(0)
    head = tl.program_id(1)
    batch = tl.program_id(2)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, D_PAD)
    row_ok = rows < seq_len
    col_ok = cols < head_dim
    ok = row_ok[:, None] & col_ok[None, :]
    x_ptrs = X + batch.to(tl.int64) * stride_xb + head * stride_xh + rows[:, None].to(tl.int64) * stride_xn + cols[None, :] * stride_xd
    x = tl.load(x_ptrs, mask=ok, other=0.0).to(tl.float32)
    s_base = batch * stride_sb + head * stride_sh
    scale = tl.load(SCALE + s_base + cols, mask=col_ok, other=0.0)
    if SMOOTH:
        mean = tl.load(MEAN + batch * stride_mb + head * stride_mh + cols, mask=col_ok, other=0.0)
        x = tl.where(ok, x - mean[None, :], 0.0)
    safe = tl.where(scale > 0.0, scale, 1.0)
    y = tl.math.div_rn(x, safe[None, :] + tl.zeros_like(x))
    y = tl.minimum(tl.maximum(y, -scale_max), scale_max)
    if INTERPRET:
        y = _round_to_e4m3(y)
    o_ptrs = OUT + batch.to(tl.int64) * stride_ob + head * stride_oh + rows[:, None].to(tl.int64) * stride_on + cols[None, :] * stride_od
    tl.store(o_ptrs, y.to(tl.float8e4nv), mask=row_ok[:, None] & (cols < head_dim_out)[None, :])


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def quant_per_channel_fp8(
    v: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    scale_max: float = E4M3_MAX,
    smooth_v: bool = False,
    head_dim_out: int | None = None,
    token_contiguous: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Quantize V to ``torch.float8_e4m3fn`` with one float32 scale per (batch, head, channel).

    Parameters
    ----------
    v : Tensor, fp16/bf16/fp32, ``[B, H, L, D]`` (HND) or ``[B, L, H, D]`` (NHD), any strides.
    scale_max : float
        e4m3 value the channel absmax maps to: 448 (full range) or 2.25 (SageAttention2++).
    smooth_v : bool
        Subtract the per-channel mean over tokens first; the caller adds it back to the output.
    head_dim_out : int, optional
        Width of the output (>= D); extra channels are zeros. Default D.
    token_contiguous : bool
        Store into a ``[B, H, D_out, L]`` buffer (tokens contiguous: the operand order of an FP8
        MMA's B operand) and return the ``[B, H, L, D_out]``-shaped transposed view of it (or
        ``[B, L, H, D_out]`` for NHD); otherwise a contiguous tensor in v's layout.

    Returns
    -------
    v_fp8 : Tensor, float8_e4m3fn, v's layout and shape (last dim ``head_dim_out``).
    v_scale : Tensor, float32, ``[B, H, D_out]`` (padding channels 0).
    v_mean : Tensor, float32, ``[B, H, 1, D_out]`` (padding channels 0), or None without smoothing.
    """
    if not (0.0 < float(scale_max) <= E4M3_MAX):
        raise ValueError(f"scale_max must be in (0, {E4M3_MAX}], got {scale_max!r}")
    b, h, n, d, (sb, sh, sn, sd) = _as_bhnd(v, tensor_layout, "v")
    d_out = d if head_dim_out is None else head_dim_out
    if d_out < d:
        raise ValueError(f"head_dim_out ({d_out}) must be >= the input head dim ({d})")
    dev = v.device
    scale = torch.zeros((b, h, d_out), dtype=torch.float32, device=dev)
    mean = torch.zeros((b, h, 1, d_out), dtype=torch.float32, device=dev) if smooth_v else None
    if token_contiguous:
        buf = torch.empty((b, h, d_out, n), dtype=torch.float8_e4m3fn, device=dev)
        out_hnd = buf.transpose(2, 3)
        out = out_hnd if tensor_layout == "HND" else out_hnd.transpose(1, 2)
    else:
        shape = (b, h, n, d_out) if tensor_layout == "HND" else (b, n, h, d_out)
        out = torch.empty(shape, dtype=torch.float8_e4m3fn, device=dev)
        out_hnd = out if tensor_layout == "HND" else out.transpose(1, 2)
    if b * h == 0 or n == 0:
        return out.zero_() if out.numel() else out, scale, mean
    d_pad = _d_pad(d_out)
    splits = triton.cdiv(n, REDUCTION_CHUNK)
    psum, pmax, pmin = (torch.empty((b, h, splits, d), dtype=torch.float32, device=dev) for _ in range(3))
    # Why BLOCK_N 32: 3 fp32 tiles of 32 x D_PAD stay in registers for D <= 256; the loop is
    # bandwidth-bound. Chunks of REDUCTION_CHUNK tokens keep every SM busy (see quant_per_block_int8).
    _channel_stats_kernel[(h, b, splits)](
        v, psum, pmax, pmin, sb, sh, sn, sd, psum.stride(0), psum.stride(1), psum.stride(2),
        n, d, REDUCTION_CHUNK, BLOCK_N=32, D_PAD=_d_pad(d),
    )
    vmax, vmin = pmax.amax(dim=2), pmin.amin(dim=2)  # [B, H, D]
    if smooth_v:
        m = psum.sum(dim=2) / n
        mean[:, :, 0, :d] = m
        # max |v - m| = max(fl(max - m), fl(m - min)): fp32 rounding is monotonic, so this equals
        # the absmax of the rounded differences the quantization pass computes.
        absmax = torch.maximum(vmax - m, m - vmin)
    else:
        absmax = torch.maximum(vmax, -vmin)
    # The reciprocal's product, as the CUDA quantizer (csrc/fused/quant_v_fp8_operand.cu) computes
    # it; torch's CUDA division by a scalar did the same, its CPU division did not.
    scale[:, :, :d] = absmax * (1.0 / float(scale_max))
    block_n = 64
    _quant_per_channel_fp8_kernel[(triton.cdiv(n, block_n), h, b)](
        v, mean if smooth_v else scale, scale, out_hnd,
        sb, sh, sn, sd,
        out_hnd.stride(0), out_hnd.stride(1), out_hnd.stride(2), out_hnd.stride(3),
        mean.stride(0) if smooth_v else 0, mean.stride(1) if smooth_v else 0,
        scale.stride(0), scale.stride(1),
        n, d, d_out, float(scale_max),
        SMOOTH=bool(smooth_v), INTERPRET=_interpreting(), BLOCK_N=block_n, D_PAD=d_pad,
    )
    return out, scale, mean
