"""Variable-length (packed) INT8 Q·Kᵀ + FP16 P·V attention in Triton.

Same math as ``attn_qk_int8_pv_fp16`` (shared kernel, ``IS_VARLEN=True``) over sequences packed
along the token axis: sequence ``b`` owns tokens ``cu_seqlens[b] : cu_seqlens[b + 1]``. The grid is
``(cdiv(max_seqlen_q, BLOCK_M), H_q, B)``; programs past their sequence's end exit at once.

Scale layout: quantization groups restart at each sequence's first token, and the scales are
stored padded per sequence, ``q_scale[b, h, g]`` for ``g < ceil(max_seqlen_q / q_group)`` (same
indexing as the dense kernels, with row numbers counted inside the sequence). K smoothing (the
per-sequence K mean) is the caller's job: ``k_int8`` arrives already smoothed.
"""

from __future__ import annotations

import torch
import triton

from .attn_qk_int8_pv_fp16 import (
    PV_FP32_ACCUM,
    _attn_qk_int8_kernel,
    _check_device,
    check_common_inputs,
    use_tma,
    check_gqa,
    check_scale_shape,
)


def attn_varlen_qk_int8_pv_fp16(
    q_int8: torch.Tensor,
    k_int8: torch.Tensor,
    v: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    is_causal: bool = False,
    output_dtype: torch.dtype = torch.float16,
    q_group: int = 128,
    k_group: int = 64,
) -> torch.Tensor:
    """Packed-sequence attention with INT8 Q·Kᵀ and 16-bit P·V (fp32 accumulate).

    Parameters
    ----------
    q_int8 : Tensor, int8, ``[T_q, H_q, D]``
        Packed quantized Q; last dim contiguous, other strides arbitrary. D in {64, 128, 256}.
    k_int8 : Tensor, int8, ``[T_k, H_kv, D]``
        Packed quantized K, smoothed per sequence by the caller.
    v : Tensor, float16, ``[T_k, H_kv, D]`` (see ``attn_qk_int8_pv_fp16`` for why fp16)
    q_scale : Tensor, float32, ``[B, H_q, ceil(max_seqlen_q / q_group)]``
        Row ``r`` of sequence ``b`` (counted from the sequence start) uses ``q_scale[b, :, r // q_group]``.
    k_scale : Tensor, float32, ``[B, H_kv, ceil(max_seqlen_k / k_group)]``
    cu_seqlens_q, cu_seqlens_k : Tensor, int32, ``[B + 1]``
        Cumulative sequence starts (0 first, T last).
    max_seqlen_q, max_seqlen_k : int
        Longest sequence lengths (host ints; they size the grid and the scale tensors).
    is_causal : bool
        Top-left aligned within each sequence (query ``i`` sees keys ``0..i``).
    output_dtype : torch.float16, torch.bfloat16 or torch.float32
    q_group, k_group : int

    Returns
    -------
    out : Tensor, ``[T_q, H_q, D]`` with ``output_dtype``.
    """
    check_common_inputs(q_int8, k_int8, q_scale, k_scale, output_dtype, q_group, k_group)
    for name, t in (("q_int8", q_int8), ("k_int8", k_int8), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D [T, H, D], got shape {tuple(t.shape)}")
    if not isinstance(v, torch.Tensor) or v.dtype != torch.float16:
        raise TypeError(f"v must be a float16 tensor, got {getattr(v, 'dtype', type(v).__name__)}")
    if v.stride(-1) != 1:
        raise ValueError(f"v must have a contiguous last (head) dimension, got strides {v.stride()}")
    _check_device("v", v, q_int8.device)
    if tuple(v.shape) != tuple(k_int8.shape):
        raise ValueError(f"v shape {tuple(v.shape)} must equal k_int8 shape {tuple(k_int8.shape)}")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32 or cu.dim() != 1:
            raise TypeError(f"{name} must be a 1-D torch.int32 tensor, got {getattr(cu, 'dtype', type(cu).__name__)}")
        if not cu.is_contiguous():
            raise ValueError(f"{name} must be contiguous (the kernel reads entry b at offset b), got strides {cu.stride()}")
        _check_device(name, cu, q_int8.device)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel() or cu_seqlens_q.numel() < 2:
        raise ValueError(
            f"cu_seqlens_q and cu_seqlens_k must both have B + 1 >= 2 entries, got "
            f"{cu_seqlens_q.numel()} and {cu_seqlens_k.numel()}"
        )
    for name, n in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    batch = cu_seqlens_q.numel() - 1
    t_q, hq, d = q_int8.shape
    hkv = k_int8.shape[1]
    groups = check_gqa(hq, hkv)
    check_scale_shape("q_scale", q_scale, batch, hq, max_seqlen_q, q_group)
    check_scale_shape("k_scale", k_scale, batch, hkv, max_seqlen_k, k_group)

    out = torch.empty((t_q, hq, d), dtype=output_dtype, device=q_int8.device)
    if max_seqlen_q == 0 or t_q == 0:
        return out
    # Sequence starts move the tile bases by whole token rows: the token strides must be aligned.
    tma = use_tma(q_int8, k_int8, v, dims_q=(0, 1), dims_k=(0, 1), dims_v=(0, 1))
    grid = lambda meta: (triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), hq, batch)  # noqa: E731
    _attn_qk_int8_kernel[grid](
        q_int8, k_int8, v, q_scale, k_scale, q_scale, out, out, cu_seqlens_q, cu_seqlens_k,
        0, q_int8.stride(1), q_int8.stride(0),
        0, k_int8.stride(1), k_int8.stride(0),
        0, v.stride(1), v.stride(0), v.stride(2),
        0, out.stride(1), out.stride(0),
        q_scale.stride(0), q_scale.stride(1), k_scale.stride(0), k_scale.stride(1),
        0, 0, 0, 0,
        0, 0, groups, q_group, k_group,
        HEAD_DIM=d, IS_CAUSAL=bool(is_causal), PV_MODE=PV_FP32_ACCUM, IS_VARLEN=True,
        RETURN_LSE=False, INTERPRET_FP8=False, P_LOG2_SCALE=0.0, USE_TMA=tma, V_TRANSPOSED=False,
    )
    return out
