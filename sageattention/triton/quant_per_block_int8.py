"""Per-block symmetric INT8 quantization of Q or K, with fused K smoothing (Triton).

Math (research notes §1.5, §2.2; contract in ``sageattention/testing/reference.py``): for each
group of ``block_size`` consecutive tokens of one (batch, head),

    y      = (x - mean) * pre_scale          (fp32; mean only for K smoothing, pre_scale =
                                              sm_scale·log2(e) for Q so the kernel can use exp2)
    scale  = absmax(y) / 127                 (one fp32 per group; 0 for an all-zero group)
    x_int8 = clamp(round_half_away(y / scale), -127, 127)

The divisions use ``div_rn`` (IEEE round-to-nearest): Triton's plain ``/`` on fp32 lowers to an
approximate divide on NVIDIA GPUs, which would break bit-exact agreement with the PyTorch
emulation. ``mean_over_tokens`` computes the smoothing mean (float32, per (batch, head, channel)):
partial sums over token chunks in Triton, added in torch.

Both kernels read any strides (HND, NHD, non-contiguous views) and packed varlen ``[T, H, D]``
input (groups restart at each sequence start, scales padded per sequence to
``ceil(max_seqlen / block_size)``). The int8 output can be wider than the input (``head_dim_out``):
the extra channels are written as zeros, which is how the API pads D to the kernel's head dim
without an extra copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _sum_over_tokens_kernel(
    X, PARTIAL, CU_SEQLENS,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_pb, stride_ph, stride_ps,
    seq_len, head_dim, chunk,
    IS_VARLEN: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
):
    """Grid ``(H, B, SPLIT)``: PARTIAL[b, h, s, :] = fp32 sum of X[b, h, s*chunk:(s+1)*chunk, :]."""
    head = tl.program_id(0)
    batch = tl.program_id(1)
    split = tl.program_id(2)
    if IS_VARLEN:
        start = tl.load(CU_SEQLENS + batch)
        length = tl.load(CU_SEQLENS + batch + 1) - start
        base = X + start.to(tl.int64) * stride_xn + head * stride_xh
    else:
        length = seq_len
        base = X + batch.to(tl.int64) * stride_xb + head * stride_xh
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, D_PAD)
    col_ok = cols < head_dim
    lo = split * chunk
    hi = tl.minimum(lo + chunk, length)
    acc = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        r = start_n + rows
        ok = (r < hi)[:, None] & col_ok[None, :]
        ptrs = base + r[:, None].to(tl.int64) * stride_xn + cols[None, :] * stride_xd
        acc += tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
    tl.store(PARTIAL + batch * stride_pb + head * stride_ph + split * stride_ps + cols, tl.sum(acc, 0), mask=col_ok)


@triton.jit
def _quant_per_block_int8_kernel(
    X, MEAN, OUT, SCALE, CU_SEQLENS,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_ob, stride_oh, stride_on,
    stride_mb, stride_mh,
    stride_sb, stride_sh,
    seq_len, head_dim, head_dim_out, pre_scale,
    BLOCK: tl.constexpr, D_PAD: tl.constexpr, HAS_MEAN: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """Grid ``(ceil(L / BLOCK), H, B)``: one program quantizes one group of BLOCK tokens."""
    group = tl.program_id(0)
    head = tl.program_id(1)
    batch = tl.program_id(2)
    if IS_VARLEN:
        start = tl.load(CU_SEQLENS + batch)
        length = tl.load(CU_SEQLENS + batch + 1) - start
        x_base = X + start.to(tl.int64) * stride_xn + head * stride_xh
        o_base = OUT + start.to(tl.int64) * stride_on + head * stride_oh
    else:
        length = seq_len
        x_base = X + batch.to(tl.int64) * stride_xb + head * stride_xh
        o_base = OUT + batch.to(tl.int64) * stride_ob + head * stride_oh
    rows = group * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D_PAD)
    row_ok = rows < length
    ok = row_ok[:, None] & (cols < head_dim)[None, :]
    x_ptrs = x_base + rows[:, None].to(tl.int64) * stride_xn + cols[None, :] * stride_xd
    x = tl.load(x_ptrs, mask=ok, other=0.0).to(tl.float32)
    if HAS_MEAN:
        mean = tl.load(MEAN + batch * stride_mb + head * stride_mh + cols, mask=cols < head_dim, other=0.0)
        x = tl.where(ok, x - mean[None, :], 0.0)
    x = x * pre_scale
    absmax = tl.max(tl.max(tl.abs(x), 1), 0)
    scale = tl.math.div_rn(absmax, 127.0)
    safe = tl.where(scale > 0.0, scale, 1.0)
    y = tl.math.div_rn(x, safe + tl.zeros_like(x))
    r = tl.floor(tl.abs(y) + 0.5)
    r = tl.minimum(tl.where(y < 0.0, -r, r), 127.0)
    r = tl.maximum(r, -127.0)
    o_ptrs = o_base + rows[:, None].to(tl.int64) * stride_on + cols[None, :]
    tl.store(o_ptrs, r.to(tl.int8), mask=row_ok[:, None] & (cols < head_dim_out)[None, :])
    tl.store(SCALE + batch * stride_sb + head * stride_sh + group, scale)


# ----------------------------------------------------------------------------------------------
# Launchers.


def _int8_output(x, b, h, d, head_dim_out, mean, tensor_layout: str, varlen: bool = False):
    """Check ``head_dim_out``/``mean`` and allocate the int8 output of a quantizer in x's layout.

    Returns ``(d_out, out, (stride_b, stride_h, stride_n))`` of the output (varlen ``[T, H, D]``:
    batch stride 0, tokens along dim 0).
    """
    d_out = d if head_dim_out is None else head_dim_out
    if d_out < d:
        raise ValueError(f"head_dim_out ({d_out}) must be >= the input head dim ({d})")
    if mean is not None and (tuple(mean.shape) != (b, h, 1, d) or mean.dtype != torch.float32):
        raise ValueError(f"mean must be float32 [B, H, 1, D] = {(b, h, 1, d)}, got {mean.dtype} {tuple(mean.shape)}")
    out = torch.empty(tuple(x.shape[:-1]) + (d_out,), dtype=torch.int8, device=x.device)
    if varlen:
        strides = (0, out.stride(1), out.stride(0))
    elif tensor_layout == "HND":
        strides = (out.stride(0), out.stride(1), out.stride(2))
    else:
        strides = (out.stride(0), out.stride(2), out.stride(1))
    return d_out, out, strides


def _as_bhnd(x: torch.Tensor, tensor_layout: str, name: str):
    """Return ``(batch, heads, length, dim, strides b/h/n/d)`` of a 4-D HND/NHD tensor."""
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D ({tensor_layout}), got shape {tuple(x.shape)}")
    if tensor_layout == "HND":
        b, h, n, d = x.shape
        sb, sh, sn, sd = x.stride()
    elif tensor_layout == "NHD":
        b, n, h, d = x.shape
        sb, sn, sh, sd = x.stride()
    else:
        raise ValueError(f"tensor_layout must be 'HND' or 'NHD', got {tensor_layout!r}")
    return b, h, n, d, (sb, sh, sn, sd)


def _varlen_geometry(x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, name: str):
    if x.dim() != 3:
        raise ValueError(f"{name} must be 3-D [T, H, D] with cu_seqlens, got shape {tuple(x.shape)}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be a 1-D int32 tensor with B + 1 >= 2 entries, got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    if not cu_seqlens.is_contiguous():
        raise ValueError(f"cu_seqlens must be contiguous (the kernels read entry b at offset b), got strides {cu_seqlens.stride()}")
    if not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise ValueError(f"max_seqlen must be a non-negative int, got {max_seqlen!r}")
    t, h, d = x.shape
    st, sh, sd = x.stride()
    return cu_seqlens.numel() - 1, h, max_seqlen, d, (0, sh, st, sd)


def _d_pad(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


#: Tokens per program of the split reductions. Why: one program per (batch, head) walking all L
#: tokens left the GPU mostly idle — on an H100 the mean of K [4, 32, 1024, 128] bf16 took 45 us
#: (3x the 11 us a full read costs at 3 TB/s); splitting L into chunks gives >= a few programs per SM.
#: Partial sums are then added by torch in a fixed order, so the result stays deterministic.
REDUCTION_CHUNK = 256


def mean_over_tokens(
    x: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> torch.Tensor:
    """Mean of ``x`` over tokens per (batch, head, channel), accumulated in float32.

    Parameters
    ----------
    x : Tensor, fp16/bf16/fp32, ``[B, H, L, D]`` (HND), ``[B, L, H, D]`` (NHD), or packed
        ``[T, H, D]`` when ``cu_seqlens`` is given. Any strides.
    cu_seqlens : Tensor, int32, ``[B + 1]``, optional
        Sequence starts of packed input: the mean is taken per sequence.
    max_seqlen : int, optional
        Longest sequence of packed input (sizes the split of the reduction). Required with
        ``cu_seqlens``.

    Returns
    -------
    Tensor, float32, ``[B, H, 1, D]`` (zeros for an empty sequence).
    """
    varlen = cu_seqlens is not None
    if varlen:
        b, h, n, d, (sb, sh, sn, sd) = _varlen_geometry(x, cu_seqlens, max_seqlen, "x")
    else:
        b, h, n, d, (sb, sh, sn, sd) = _as_bhnd(x, tensor_layout, "x")
    if b * h == 0 or n == 0:
        return torch.zeros((b, h, 1, d), dtype=torch.float32, device=x.device)
    splits = triton.cdiv(n, REDUCTION_CHUNK)
    partial = torch.empty((b, h, splits, d), dtype=torch.float32, device=x.device)
    # Why BLOCK_N 32: 32 x D_PAD(<=256) fp32 accumulators = at most 64 registers per thread
    # with 4 warps; the loop is bandwidth-bound, so a larger tile buys nothing.
    _sum_over_tokens_kernel[(h, b, splits)](
        x, partial, cu_seqlens if varlen else partial,
        sb, sh, sn, sd, partial.stride(0), partial.stride(1), partial.stride(2),
        n, d, REDUCTION_CHUNK,
        IS_VARLEN=varlen, BLOCK_N=32, D_PAD=_d_pad(d),
    )
    total = partial.sum(dim=2, keepdim=True)
    if varlen:
        # Chunks past a shorter sequence's end summed nothing (their partials are 0).
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).clamp(min=1).to(torch.float32)
        return total / lengths[:, None, None, None]
    return total / n


def quant_per_block_int8(
    x: torch.Tensor,
    *,
    block_size: int,
    pre_scale: float = 1.0,
    mean: torch.Tensor | None = None,
    tensor_layout: str = "HND",
    head_dim_out: int | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to INT8 with one float32 scale per ``block_size`` tokens.

    Parameters
    ----------
    x : Tensor, fp16/bf16/fp32, ``[B, H, L, D]`` (HND), ``[B, L, H, D]`` (NHD), or packed
        ``[T, H, D]`` with ``cu_seqlens``. Any strides.
    block_size : int
        Tokens per quantization group (128 = per-block Q, 64 = per-block K, 32/16 = per-warp Q).
    pre_scale : float
        Multiplier applied before the absmax (``sm_scale * log2(e)`` for Q, 1 for K).
    mean : Tensor, float32, ``[B, H, 1, D]``, optional
        Subtracted before scaling (K smoothing; from :func:`mean_over_tokens`).
    head_dim_out : int, optional
        Width of the int8 output (>= D); channels D.. are zeros. Default D.
    cu_seqlens, max_seqlen
        Packed varlen input: groups restart at each sequence start.

    Returns
    -------
    x_int8 : Tensor, int8, x's layout (contiguous) with last dim ``head_dim_out``.
    scale : Tensor, float32, ``[B, H, ceil(L / block_size)]`` (varlen: ``ceil(max_seqlen / block_size)``).
    """
    if not isinstance(block_size, int) or block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a positive power of two, got {block_size!r}")
    varlen = cu_seqlens is not None
    if varlen:
        b, h, n, d, (sb, sh, sn, sd) = _varlen_geometry(x, cu_seqlens, max_seqlen, "x")
    else:
        b, h, n, d, (sb, sh, sn, sd) = _as_bhnd(x, tensor_layout, "x")
    d_out, out, (so_b, so_h, so_n) = _int8_output(x, b, h, d, head_dim_out, mean, tensor_layout, varlen)
    groups = triton.cdiv(n, block_size)
    scale = torch.empty((b, h, groups), dtype=torch.float32, device=x.device)
    if b * h * groups == 0:
        return out, scale
    _quant_per_block_int8_kernel[(groups, h, b)](
        x, mean if mean is not None else scale, out, scale, cu_seqlens if varlen else scale,
        sb, sh, sn, sd, so_b, so_h, so_n,
        mean.stride(0) if mean is not None else 0, mean.stride(1) if mean is not None else 0,
        scale.stride(0), scale.stride(1),
        n, d, d_out, float(pre_scale),
        BLOCK=block_size, D_PAD=_d_pad(d_out), HAS_MEAN=mean is not None, IS_VARLEN=varlen,
    )
    return out, scale
