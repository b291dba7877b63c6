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
    scale = blocks.abs().amax(dim=-1) / 127.0
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
