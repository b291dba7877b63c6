"""INT8 Q·Kᵀ + FP8 (e4m3) P·V attention in Triton (SageAttention2 8-bit scheme, Triton path).

Math (research notes §2.3.4-§2.3.5): as ``attn_qk_int8_pv_fp16`` but

* P is scaled into e4m3's range by a static factor 448 folded into the exponent,
  ``P = exp2(S - m + log2 448)``; the row sum ``l`` is accumulated from the same scaled values so
  the final ``O / l`` cancels the 448 (and the LSE subtracts log2 448);
* V is e4m3 with one scale per (batch, head, channel), applied to O in the epilogue;
* two-level accumulation: each K/V block's FP8 MMA starts from zero and its fp32 result is added
  to the running fp32 O, so the FP22 accumulator of the FP8 MMA (sm89/sm90) never accumulates
  across blocks.

The kernel is the shared one in ``attn_qk_int8_pv_fp16`` with ``PV_MODE=PV_FP8``.
"""

from __future__ import annotations

import torch

from ._configs import interpreting
from .attn_qk_int8_pv_fp16 import PV_FP8, _check_device, as_hnd, check_common_inputs, launch_dense

#: Triton lowers an e4m3 ``tl.dot`` to tensor-core instructions only from sm89 (Ada) on.
MIN_FP8_CAPABILITY = (8, 9)


def attn_qk_int8_pv_fp8(
    q_int8: torch.Tensor,
    k_int8: torch.Tensor,
    v_fp8: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    output_dtype: torch.dtype = torch.float16,
    return_lse: bool = False,
    q_group: int = 128,
    k_group: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention with INT8 Q·Kᵀ and FP8 P·V, on pre-quantized inputs.

    Parameters
    ----------
    q_int8, k_int8, q_scale, k_scale, tensor_layout, is_causal, output_dtype, return_lse,
    q_group, k_group
        As in :func:`attn_qk_int8_pv_fp16`.
    v_fp8 : Tensor, torch.float8_e4m3fn, ``[B, H_kv, L_k, D]`` (HND) or ``[B, L_k, H_kv, D]`` (NHD)
        Any strides: a view of a token-contiguous (transposed) buffer is read as is, which is the
        operand order the FP8 MMA wants. Why it matters: with pointer loads (pre-sm90, or
        unaligned strides) a channel-contiguous V costs half the speed (H100, hd128, L=16K:
        255 vs 483 TOPS); with tensor descriptors (sm90, 16-byte-aligned strides) both orders
        run at the same speed (e2e 612 TOPS with channel-contiguous V).
    v_scale : Tensor, float32, ``[B, H_kv, D]``
        Per-channel dequantization scale of V (absmax / 448 for full-range e4m3).

    Returns
    -------
    (out, lse) : out in q's layout with ``output_dtype``; base-2 lse ``[B, H_q, L_q]`` or None.

    Archs: sm89 and newer (Ada, Hopper, Blackwell); a clear RuntimeError elsewhere. CPU under
    ``TRITON_INTERPRET=1``.
    """
    check_common_inputs(q_int8, k_int8, q_scale, k_scale, output_dtype, q_group, k_group)
    if not isinstance(v_fp8, torch.Tensor) or v_fp8.dtype != torch.float8_e4m3fn:
        raise TypeError(f"v_fp8 must be a torch.float8_e4m3fn tensor, got {getattr(v_fp8, 'dtype', type(v_fp8).__name__)}")
    if not isinstance(v_scale, torch.Tensor) or v_scale.dtype != torch.float32:
        raise TypeError(f"v_scale must be a float32 tensor, got {getattr(v_scale, 'dtype', type(v_scale).__name__)}")
    _check_device("v_fp8", v_fp8, q_int8.device)
    _check_device("v_scale", v_scale, q_int8.device)
    vh = as_hnd("v_fp8", v_fp8, tensor_layout)
    expected = (vh.shape[0], vh.shape[1], vh.shape[3])
    if tuple(v_scale.shape) != expected or v_scale.stride(-1) != 1:
        raise ValueError(f"v_scale must be a [B, H_kv, D] = {expected} tensor with a contiguous last dim, got {tuple(v_scale.shape)}")
    if q_int8.device.type == "cuda" and not interpreting():
        cap = torch.cuda.get_device_capability(q_int8.device)
        if cap < MIN_FP8_CAPABILITY:
            raise RuntimeError(
                f"attn_qk_int8_pv_fp8 needs an sm89+ GPU for Triton's FP8 tensor-core dot; "
                f"{torch.cuda.get_device_name(q_int8.device)} is sm{cap[0]}{cap[1]}: use the FP16 P·V variant"
            )
    return launch_dense(
        q_int8, k_int8, v_fp8, q_scale, k_scale, v_scale, tensor_layout=tensor_layout,
        is_causal=is_causal, pv_mode=PV_FP8, output_dtype=output_dtype, return_lse=return_lse,
        q_group=q_group, k_group=k_group,
    )
