"""Upstream-named quantization helpers (``per_block_int8``, ``per_warp_int8``, ``sub_mean``,
``per_channel_fp8``): thin front-ends over the Triton quantizers in ``sageattention/triton/``.

Names and argument orders follow upstream 2.2.0 (research notes §1.5) so code that calls them keeps
working. Where our output differs it is said per function: ``per_channel_fp8`` returns V in its
input layout (token-contiguous view available), not upstream's transposed and permuted buffer,
because our kernels read it through strides.
"""

from __future__ import annotations

import torch

LOG2E = 1.4426950408889634


def _km_as_bh1d(km: torch.Tensor | None, k: torch.Tensor, tensor_layout: str) -> torch.Tensor | None:
    """Upstream passes the K mean in k's layout (``[B, H, 1, D]`` HND, ``[B, 1, H, D]`` NHD)."""
    if km is None:
        return None
    km = km.to(torch.float32)
    if km.dim() == 3:  # [B, H, D]
        km = km.unsqueeze(2)
    elif tensor_layout == "NHD":
        km = km.transpose(1, 2)
    return km.contiguous()


def per_block_int8(
    q: torch.Tensor,
    k: torch.Tensor,
    km: torch.Tensor | None = None,
    BLKQ: int = 128,
    BLKK: int = 64,
    sm_scale: float | None = None,
    tensor_layout: str = "HND",
):
    """Per-block INT8 Q and K (Q with ``sm_scale * log2(e)`` folded in, K minus ``km``).

    Parameters
    ----------
    q : Tensor, fp16/bf16, ``[B, H_q, L_q, D]`` (HND) or ``[B, L_q, H_q, D]`` (NHD), any strides
    k : Tensor, fp16/bf16, ``[B, H_kv, L_k, D]`` / ``[B, L_k, H_kv, D]``
    km : Tensor, optional
        K mean in k's layout with a length-1 token axis; subtracted from K before quantizing.
    BLKQ, BLKK : int
        Tokens per Q / K scale.
    sm_scale : float, optional
        Default ``D ** -0.5``.

    Returns
    -------
    q_int8, q_scale ``[B, H_q, ceil(L_q/BLKQ)]`` float32, k_int8, k_scale ``[B, H_kv, ceil(L_k/BLKK)]``.
    """
    from .triton.quant_per_block_int8 import quant_per_block_int8

    if sm_scale is None:
        sm_scale = q.shape[-1] ** -0.5
    q_i8, q_scale = quant_per_block_int8(q, block_size=BLKQ, pre_scale=sm_scale * LOG2E, tensor_layout=tensor_layout)
    k_i8, k_scale = quant_per_block_int8(
        k, block_size=BLKK, mean=_km_as_bh1d(km, k, tensor_layout), tensor_layout=tensor_layout
    )
    return q_i8, q_scale, k_i8, k_scale


def per_warp_int8(
    q: torch.Tensor,
    k: torch.Tensor,
    km: torch.Tensor | None = None,
    BLKQ: int = 128,
    WARPQ: int = 32,
    BLKK: int = 64,
    tensor_layout: str = "HND",
):
    """Per-warp INT8 Q (one scale per WARPQ rows), per-block K. ``sm_scale`` is *not* folded in
    (as upstream: the CUDA kernels apply it).

    Returns
    -------
    q_int8, q_scale ``[B, H_q, ceil(L_q/BLKQ) * (BLKQ/WARPQ)]``, k_int8, k_scale ``[B, H_kv, ceil(L_k/BLKK)]``.
    """
    from .triton.quant_per_block_int8 import quant_per_block_int8
    from .triton.quant_per_thread_int8 import quant_per_warp_int8

    q_i8, q_scale = quant_per_warp_int8(q, block=BLKQ, warp=WARPQ, tensor_layout=tensor_layout)
    k_i8, k_scale = quant_per_block_int8(
        k, block_size=BLKK, mean=_km_as_bh1d(km, k, tensor_layout), tensor_layout=tensor_layout
    )
    return q_i8, q_scale, k_i8, k_scale


def sub_mean(v: torch.Tensor, tensor_layout: str = "HND"):
    """Subtract V's per-channel mean over tokens (SageAttention2 §3.4 smoothing).

    Returns
    -------
    v_smoothed : Tensor, float16, v's layout
    vm : Tensor, float32, ``[B, H, D]``
    """
    from .triton.quant_per_block_int8 import mean_over_tokens

    vm = mean_over_tokens(v, tensor_layout=tensor_layout)  # [B, H, 1, D]
    centred = v.float() - (vm if tensor_layout == "HND" else vm.transpose(1, 2))
    return centred.to(torch.float16), vm.squeeze(2)


def per_channel_fp8(
    v: torch.Tensor,
    tensor_layout: str = "HND",
    scale_max: float = 448.0,
    smooth_v: bool = True,
):
    """Per-channel e4m3 V (one float32 scale per (batch, head, channel)).

    Unlike upstream, ``v_fp8`` keeps v's layout and shape (a contiguous tensor), with no token
    padding or in-group permutation: those are operand-layout details of upstream's CUDA kernels.

    Returns
    -------
    v_fp8 : Tensor, float8_e4m3fn, v's layout
    v_scale : Tensor, float32, ``[B, H, D]``
    vm : Tensor, float32, ``[B, H, D]``, or None when ``smooth_v`` is False
    """
    from .triton.quant_per_channel_fp8 import quant_per_channel_fp8

    v_fp8, v_scale, vm = quant_per_channel_fp8(
        v, tensor_layout=tensor_layout, scale_max=scale_max, smooth_v=smooth_v
    )
    return v_fp8, v_scale, (vm.squeeze(2) if vm is not None else None)
