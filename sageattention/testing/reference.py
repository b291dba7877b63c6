"""Reference attention and PyTorch emulations of our quantization schemes.

Two references exist so a failing kernel test tells a kernel bug from quantization error
(STYLE.md H4): ``attention_ref`` is exact float64 attention; the ``*_ref`` quantizers emulate,
step by step in PyTorch, what our kernels compute.

Quantization contract shared by the Triton and CUDA quantizers (algorithm notes §1.5, §2.2):

* INT8 symmetric, ``scale = absmax / 127`` over one quantization group, values
  ``clamp(round_half_away_from_zero(x / scale), -127, 127)``; an all-zero group has scale 0
  and quantizes to 0.
* Q carries ``sm_scale * log2(e)`` folded in *before* taking the absmax, so the kernel can use
  ``exp2`` directly on dequantized scores.
* K smoothing: ``k - mean(k over all tokens)`` per (batch, head, channel), mean in float32,
  subtracted before quantization; the mean is returned so callers can correct the LSE.
* Per-block granularity: Q blocks of ``BLKQ`` tokens, K blocks of ``BLKK`` tokens; scales are
  float32 of shape ``[B, H, ceil(L / BLK)]``.
"""

from __future__ import annotations

import math

import torch

LOG2E = 1.4426950408889634


def to_hnd(x: torch.Tensor, tensor_layout: str) -> torch.Tensor:
    """View ``x`` as ``[B, H, L, D]`` whatever its layout ("HND" or "NHD")."""
    if tensor_layout == "HND":
        return x
    if tensor_layout == "NHD":
        return x.transpose(1, 2)
    raise ValueError(f"tensor_layout must be 'HND' or 'NHD', got {tensor_layout!r}")


def div_rn(x: torch.Tensor, divisor: float) -> torch.Tensor:
    """``x / divisor`` rounded as IEEE division on every device.

    PyTorch's CUDA ``div`` turns a division by a Python/CPU scalar into a multiplication by its
    reciprocal, which can be one ulp off (``div_true_kernel_cuda``, ATen/native/cuda/
    BinaryDivTrueKernel.cu); our kernels divide with ``div_rn``/``__fdiv_rn``. A same-device
    divisor tensor takes the true-division path, so the emulation stays bit-exact on the GPU too.
    """
    return x / torch.full((), divisor, dtype=x.dtype, device=x.device)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties away from zero (what ``x + 0.5*sign(x)`` then truncation gives)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def quant_int8_groups(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` ``[B, H, L, D]`` (float32) per group of ``group_size`` consecutive tokens.

    Returns ``(int8 [B, H, L, D], scale float32 [B, H, ceil(L / group_size)])``.
    """
    b, h, n, d = x.shape
    groups = math.ceil(n / group_size)
    padded = torch.zeros(b, h, groups * group_size, d, dtype=torch.float32, device=x.device)
    padded[:, :, :n] = x
    blocks = padded.view(b, h, groups, group_size * d)
    scale = div_rn(blocks.abs().amax(dim=-1), 127.0)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = round_half_away(blocks / safe[..., None]).clamp_(-127, 127)
    q = q.view(b, h, groups * group_size, d)[:, :, :n]
    return q.to(torch.int8), scale


def quant_per_block_int8_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    sm_scale: float | None = None,
    smooth_k: bool = True,
    blkq: int = 128,
    blkk: int = 64,
):
    """Emulate per-block INT8 quantization of Q and K.

    Returns ``(q_int8, q_scale, k_int8, k_scale, k_mean)``; int8 tensors keep the input layout,
    scales are ``[B, H, ceil(L / BLK)]`` float32, ``k_mean`` is ``[B, H_kv, 1, D]`` float32
    (zeros when ``smooth_k`` is False).
    """
    qh = to_hnd(q, tensor_layout).float()
    kh = to_hnd(k, tensor_layout).float()
    if sm_scale is None:
        sm_scale = qh.shape[-1] ** -0.5
    k_mean = kh.mean(dim=2, keepdim=True) if smooth_k else torch.zeros_like(kh[:, :, :1])
    q_i8, q_scale = quant_int8_groups(qh * (sm_scale * LOG2E), blkq)
    k_i8, k_scale = quant_int8_groups(kh - k_mean, blkk)
    if tensor_layout == "NHD":
        q_i8, k_i8 = q_i8.transpose(1, 2), k_i8.transpose(1, 2)
    return q_i8, q_scale, k_i8, k_scale, k_mean


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention in float64: returns ``(out, lse)``.

    ``out`` has q's layout and float64 dtype; ``lse`` is the natural-log logsumexp of the scaled
    scores, ``[B, H_q, L_q]``. GQA: ``H_q`` must be a multiple of ``H_kv``. Causal masking is
    top-left aligned (query ``i`` sees keys ``0..i``), as ``scaled_dot_product_attention(...,
    is_causal=True)`` and upstream SageAttention do when ``L_q != L_k``.
    """
    qh, kh, vh = (to_hnd(t, tensor_layout).double() for t in (q, k, v))
    groups = qh.shape[1] // kh.shape[1]
    kh = kh.repeat_interleave(groups, dim=1)
    vh = vh.repeat_interleave(groups, dim=1)
    if sm_scale is None:
        sm_scale = qh.shape[-1] ** -0.5
    s = torch.matmul(qh, kh.transpose(-1, -2)) * sm_scale
    if is_causal:
        lq, lk = s.shape[-2], s.shape[-1]
        row = torch.arange(lq, device=s.device)[:, None]
        col = torch.arange(lk, device=s.device)[None, :]
        s = s.masked_fill(col > row, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    out = torch.matmul(torch.softmax(s, dim=-1), vh)
    if tensor_layout == "NHD":
        out = out.transpose(1, 2)
    return out, lse


# ----------------------------------------------------------------------------------------------
# Finer INT8 granularities (notes §1.5, §2.3.2). Rows of one "slab" (a warp's share of a tile)
# are split into groups by their index inside the slab; scale arrays are padded to whole tiles
# (``ceil(L / BLK) * (BLK / WARP) * groups_per_slab`` entries), the padding groups having scale 0.


def quant_int8_slab_groups(
    x: torch.Tensor, *, block: int, slab: int, groups_per_slab: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` ``[B, H, L, D]`` (float32) with ``groups_per_slab`` scales per ``slab`` rows.

    Row ``r`` of slab ``s`` belongs to group ``s * G + (r mod 8) // (8 // G)``, G =
    ``groups_per_slab``: G = 1 is per-warp (one scale per slab), G = 8 is per-thread Q (rows with
    equal ``r mod 8``), G = 4 is per-thread K (rows with ``r mod 8`` in ``{2t, 2t + 1}``).
    Returns ``(int8 [B, H, L, D], scale float32 [B, H, ceil(L / block) * (block / slab) * G])``.
    """
    if block % slab or (groups_per_slab != 1 and (slab % 8 or 8 % groups_per_slab)):
        raise ValueError(f"bad grouping: block={block}, slab={slab}, groups_per_slab={groups_per_slab}")
    b, h, n, d = x.shape
    padded_len = math.ceil(n / block) * block
    padded = torch.zeros(b, h, padded_len, d, dtype=torch.float32, device=x.device)
    padded[:, :, :n] = x
    slabs = padded_len // slab
    if groups_per_slab == 1:
        view = padded.view(b, h, slabs, 1, 1, slab * d)
    else:
        # [slab / 8 row octets, G groups, 8 / G adjacent rows x D] per slab.
        view = padded.view(b, h, slabs, slab // 8, groups_per_slab, (8 // groups_per_slab) * d)
    scale = div_rn(view.abs().amax(dim=(3, 5)), 127.0)  # [B, H, slabs, G]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = round_half_away(view / safe[:, :, :, None, :, None]).clamp_(-127, 127)
    q = q.reshape(b, h, padded_len, d)[:, :, :n]
    return q.to(torch.int8), scale.reshape(b, h, slabs * groups_per_slab)


def _q_pre_scale(head_dim: int, sm_scale: float | None, fold_sm_scale: bool) -> float:
    if not fold_sm_scale:
        return 1.0
    return (head_dim**-0.5 if sm_scale is None else sm_scale) * LOG2E


def quant_per_warp_int8_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    sm_scale: float | None = None,
    fold_sm_scale: bool = True,
    smooth_k: bool = True,
    blkq: int = 128,
    warpq: int = 32,
    blkk: int = 64,
):
    """Emulate per-warp INT8: one Q scale per ``warpq`` rows, K per ``blkk`` block.

    Returns ``(q_int8, q_scale [B, H_q, ceil(L_q/blkq)*(blkq/warpq)], k_int8, k_scale
    [B, H_kv, ceil(L_k/blkk)], k_mean [B, H_kv, 1, D])``. ``fold_sm_scale`` multiplies Q by
    ``sm_scale * log2(e)`` before quantizing (the Triton kernels' convention; the CUDA kernels
    apply sm_scale themselves and use ``fold_sm_scale=False``).
    """
    qh = to_hnd(q, tensor_layout).float()
    kh = to_hnd(k, tensor_layout).float()
    k_mean = kh.mean(dim=2, keepdim=True) if smooth_k else torch.zeros_like(kh[:, :, :1])
    pre = _q_pre_scale(qh.shape[-1], sm_scale, fold_sm_scale)
    q_i8, q_scale = quant_int8_slab_groups(qh * pre, block=blkq, slab=warpq, groups_per_slab=1)
    k_i8, k_scale = quant_int8_groups(kh - k_mean, blkk)
    if tensor_layout == "NHD":
        q_i8, k_i8 = q_i8.transpose(1, 2), k_i8.transpose(1, 2)
    return q_i8, q_scale, k_i8, k_scale, k_mean


def quant_per_thread_int8_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    sm_scale: float | None = None,
    fold_sm_scale: bool = False,
    smooth_k: bool = True,
    blkq: int = 128,
    warpq: int = 32,
    blkk: int = 64,
    warpk: int = 64,
):
    """Emulate per-thread INT8 (notes §2.3.2, SageAttention2 Eq. 8).

    Q: 8 groups per ``warpq``-row slab (rows with equal ``r mod 8``); K: 4 groups per
    ``warpk``-row slab (rows with ``r mod 8`` in ``{2t, 2t+1}``): the rows one MMA thread's
    accumulator fragment touches, so each thread dequantizes with one Q and one K scale.
    Returns ``(q_int8, q_scale [.., ceil(L_q/blkq)*(blkq/warpq)*8], k_int8,
    k_scale [.., ceil(L_k/blkk)*(blkk/warpk)*4], k_mean)``. Default ``fold_sm_scale=False``:
    the CUDA kernels that consume per-thread scales apply sm_scale themselves (notes §1.5).
    """
    qh = to_hnd(q, tensor_layout).float()
    kh = to_hnd(k, tensor_layout).float()
    k_mean = kh.mean(dim=2, keepdim=True) if smooth_k else torch.zeros_like(kh[:, :, :1])
    pre = _q_pre_scale(qh.shape[-1], sm_scale, fold_sm_scale)
    q_i8, q_scale = quant_int8_slab_groups(qh * pre, block=blkq, slab=warpq, groups_per_slab=8)
    k_i8, k_scale = quant_int8_slab_groups(kh - k_mean, block=blkk, slab=warpk, groups_per_slab=4)
    if tensor_layout == "NHD":
        q_i8, k_i8 = q_i8.transpose(1, 2), k_i8.transpose(1, 2)
    return q_i8, q_scale, k_i8, k_scale, k_mean


def smooth_q_per_block_ref(
    q: torch.Tensor, k_smoothed: torch.Tensor, *, tensor_layout: str = "HND", blkq: int = 128
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q smoothing (SageAttention2 §3.1, notes §2.3.1): ``γ(Q_i) = Q_i - q̄_i`` per ``blkq`` block.

    Returns ``(q_smoothed [B, H_q, L_q, D] float32 HND, q_mean [B, H_q, ceil(L_q/blkq), D],
    delta_s [B, H_q, ceil(L_q/blkq), L_k])`` with ``delta_s = q̄_i · γ(K)ᵀ`` (float32, GQA-aware),
    so that ``Q Kᵀ = γ(Q) γ(K)ᵀ + ΔS`` row-block-wise up to the per-row constant ``q · k̄``
    that softmax ignores. ``k_smoothed`` is the already mean-subtracted K.
    """
    qh = to_hnd(q, tensor_layout).float()
    kh = to_hnd(k_smoothed, tensor_layout).float()
    b, hq, n, d = qh.shape
    blocks = math.ceil(n / blkq)
    index = torch.arange(n, device=qh.device) // blkq
    sums = torch.zeros(b, hq, blocks, d, dtype=torch.float32, device=qh.device)
    sums.index_add_(2, index, qh)
    counts = torch.bincount(index, minlength=blocks).to(torch.float32).clamp_(min=1)
    q_mean = sums / counts[:, None]
    kh = kh.repeat_interleave(hq // kh.shape[1], dim=1)
    delta_s = torch.matmul(q_mean, kh.transpose(-1, -2))
    return qh - q_mean[:, :, index], q_mean, delta_s


def quant_v_per_channel_fp8_ref(
    v: torch.Tensor, *, tensor_layout: str = "HND", scale_max: float = 448.0, smooth_v: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Emulate per-channel e4m3 V quantization (notes §2.3.4, §2.3.6).

    ``scale = max over tokens |v - mean| · fl(1 / scale_max)`` per (batch, head, channel) (mean only with
    ``smooth_v``), ``v_fp8 = e4m3(clamp((v - mean) / scale, ±scale_max))`` round-to-nearest-even;
    an all-zero channel has scale 0 and zeros. Returns ``(v_fp8 in v's layout, scale float32
    [B, H, D], mean float32 [B, H, 1, D] or None)``.
    """
    vh = to_hnd(v, tensor_layout).float()
    mean = vh.mean(dim=2, keepdim=True) if smooth_v else None
    centred = vh - mean if smooth_v else vh
    scale = centred.abs().amax(dim=2) * (1.0 / scale_max)  # the quantizers' reciprocal product
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    v8 = (centred / safe[:, :, None, :]).clamp_(-scale_max, scale_max).to(torch.float8_e4m3fn)
    if tensor_layout == "NHD":
        v8 = v8.transpose(1, 2)
    return v8, scale, mean


def round_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round ``x`` to ``dtype`` (float16, bfloat16, float8_e4m3fn, ...) and back to float32:
    what storing an operand in that format does to its value."""
    return x.to(dtype).to(torch.float32)


def round_to_fp16(x: torch.Tensor) -> torch.Tensor:
    """fp16 rounding (round-to-nearest-even; |x| > 65504 becomes inf, as in the hardware)."""
    return round_to(x, torch.float16)
