"""Per-warp and per-thread INT8 quantization of Q and K (Triton).

Granularities (research notes §1.5, §2.3.2; emulated by ``testing.reference.quant_int8_slab_groups``):

* **per-warp** Q: one scale per ``WARPQ`` consecutive rows (the rows one warp owns in a
  ``BLKQ``-row tile); K stays per block. The per-block kernel with ``block_size = WARPQ`` does
  exactly this, so per-warp reuses it and only pads the scale array to whole tiles.
* **per-thread**: inside each warp slab, the rows one MMA thread's accumulator fragment covers
  share a scale — Q rows with equal ``r mod 8`` (8 groups per ``WARPQ`` slab), K rows with
  ``r mod 8 ∈ {2t, 2t+1}`` (4 groups per ``WARPK`` slab) — so dequantization still costs one
  scale pair per thread while the groups are 8x/4x finer than per-block (SageAttention2 Eq. 8).

Scale arrays follow upstream's padded shapes: ``[B, H, ceil(L / BLK) * (BLK / WARP) * G]``, padding
groups holding scale 0. The Triton attention kernels index scales by ``row // group`` and can use
per-warp scales directly; per-thread scales are for the CUDA kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .quant_per_block_int8 import _as_bhnd, _d_pad, _int8_output, quant_per_block_int8


@triton.jit
def _quant_per_thread_int8_kernel(
    X, MEAN, OUT, SCALE,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_ob, stride_oh, stride_on,
    stride_mb, stride_mh, stride_sb, stride_sh,
    seq_len, head_dim, head_dim_out, pre_scale,
    SLAB: tl.constexpr, GROUPS: tl.constexpr, D_PAD: tl.constexpr, HAS_MEAN: tl.constexpr,
):
    """Grid ``(num_slabs, H, B)``: one program quantizes one SLAB-row slab into GROUPS groups."""
    slab = tl.program_id(0)
    head = tl.program_id(1)
    batch = tl.program_id(2)
    rows = slab * SLAB + tl.arange(0, SLAB)
    cols = tl.arange(0, D_PAD)
    row_ok = rows < seq_len
    ok = row_ok[:, None] & (cols < head_dim)[None, :]
    x_ptrs = X + batch.to(tl.int64) * stride_xb + head * stride_xh + rows[:, None].to(tl.int64) * stride_xn + cols[None, :] * stride_xd
    x = tl.load(x_ptrs, mask=ok, other=0.0).to(tl.float32)
    if HAS_MEAN:
        mean = tl.load(MEAN + batch * stride_mb + head * stride_mh + cols, mask=cols < head_dim, other=0.0)
        x = tl.where(ok, x - mean[None, :], 0.0)
    x = x * pre_scale
    # Row r = 8a + (8 / GROUPS) t + u belongs to group t: view the slab as
    # [SLAB / 8, GROUPS, (8 / GROUPS) * D_PAD] (row-major, so adjacent rows stay adjacent).
    xg = tl.reshape(tl.abs(x), [SLAB // 8, GROUPS, (8 // GROUPS) * D_PAD])
    absmax = tl.max(tl.max(xg, 2), 0)  # [GROUPS]
    scale = tl.math.div_rn(absmax, 127.0 + tl.zeros_like(absmax))
    safe = tl.where(scale > 0.0, scale, 1.0)
    y = tl.reshape(x, [SLAB // 8, GROUPS, (8 // GROUPS) * D_PAD])
    y = tl.math.div_rn(y, safe[None, :, None] + tl.zeros_like(y))
    y = tl.reshape(y, [SLAB, D_PAD])
    r = tl.floor(tl.abs(y) + 0.5)
    r = tl.maximum(tl.minimum(tl.where(y < 0.0, -r, r), 127.0), -127.0)
    o_ptrs = OUT + batch.to(tl.int64) * stride_ob + head * stride_oh + rows[:, None].to(tl.int64) * stride_on + cols[None, :]
    tl.store(o_ptrs, r.to(tl.int8), mask=row_ok[:, None] & (cols < head_dim_out)[None, :])
    tl.store(SCALE + batch * stride_sb + head * stride_sh + slab * GROUPS + tl.arange(0, GROUPS), scale)


def _check_tiles(block: int, slab: int, name_block: str, name_slab: str) -> None:
    if not isinstance(slab, int) or slab < 8 or slab & (slab - 1):
        raise ValueError(f"{name_slab} must be a power of two >= 8, got {slab!r}")
    if not isinstance(block, int) or block < slab or block % slab:
        raise ValueError(f"{name_block} must be a multiple of {name_slab} ({slab}), got {block!r}")


def quant_per_warp_int8(
    x: torch.Tensor,
    *,
    block: int = 128,
    warp: int = 32,
    pre_scale: float = 1.0,
    mean: torch.Tensor | None = None,
    tensor_layout: str = "HND",
    head_dim_out: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-warp INT8: one scale per ``warp`` rows; scales padded to whole ``block``-row tiles.

    Parameters and layouts as :func:`quant_per_block_int8.quant_per_block_int8`.

    Returns
    -------
    x_int8 : Tensor, int8, x's layout, last dim ``head_dim_out``.
    scale : Tensor, float32, ``[B, H, ceil(L / block) * (block / warp)]``; the first
        ``ceil(L / warp)`` entries are the groups a kernel indexes with ``row // warp``.
    """
    _check_tiles(block, warp, "block", "warp")
    out, scale = quant_per_block_int8(
        x, block_size=warp, pre_scale=pre_scale, mean=mean, tensor_layout=tensor_layout,
        head_dim_out=head_dim_out,
    )
    b, h, n = scale.shape[0], scale.shape[1], _as_bhnd(x, tensor_layout, "x")[2]
    padded = triton.cdiv(n, block) * (block // warp)
    if padded > scale.shape[2]:
        full = torch.zeros((b, h, padded), dtype=torch.float32, device=x.device)
        full[:, :, : scale.shape[2]] = scale
        scale = full
    return out, scale


def quant_per_thread_int8(
    x: torch.Tensor,
    *,
    block: int,
    warp: int,
    groups_per_warp: int,
    pre_scale: float = 1.0,
    mean: torch.Tensor | None = None,
    tensor_layout: str = "HND",
    head_dim_out: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-thread INT8 (``groups_per_warp`` = 8 for Q, 4 for K).

    Parameters
    ----------
    x : Tensor, fp16/bf16/fp32, ``[B, H, L, D]`` (HND) or ``[B, L, H, D]`` (NHD), any strides.
    block, warp : int
        Tile rows (BLKQ/BLKK) and warp-slab rows (WARPQ/WARPK); ``block % warp == 0``.
    groups_per_warp : {8, 4, 2, 1}
        Row ``r`` of a slab belongs to group ``(r mod 8) // (8 / groups_per_warp)``.
    pre_scale, mean, tensor_layout, head_dim_out
        As :func:`quant_per_block_int8.quant_per_block_int8`.

    Returns
    -------
    x_int8 : Tensor, int8, x's layout, last dim ``head_dim_out``.
    scale : Tensor, float32, ``[B, H, ceil(L / block) * (block / warp) * groups_per_warp]``.
    """
    _check_tiles(block, warp, "block", "warp")
    if groups_per_warp not in (1, 2, 4, 8):
        raise ValueError(f"groups_per_warp must be 1, 2, 4 or 8, got {groups_per_warp!r}")
    b, h, n, d, (sb, sh, sn, sd) = _as_bhnd(x, tensor_layout, "x")
    d_out, out, (so_b, so_h, so_n) = _int8_output(x, b, h, d, head_dim_out, mean, tensor_layout)
    slabs = triton.cdiv(n, block) * (block // warp)
    scale = torch.empty((b, h, slabs * groups_per_warp), dtype=torch.float32, device=x.device)
    if b * h * slabs == 0:
        return out, scale
    _quant_per_thread_int8_kernel[(slabs, h, b)](
        x, mean if mean is not None else scale, out, scale,
        sb, sh, sn, sd, so_b, so_h, so_n,
        mean.stride(0) if mean is not None else 0, mean.stride(1) if mean is not None else 0,
        scale.stride(0), scale.stride(1),
        n, d, d_out, float(pre_scale),
        SLAB=warp, GROUPS=groups_per_warp, D_PAD=_d_pad(d_out), HAS_MEAN=mean is not None,
    )
    return out, scale
