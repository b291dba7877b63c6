"""Public attention entry points: validation, quantization, dispatch (no kernels here).

Signatures and defaults are upstream SageAttention 2.2.0's (research notes §1.2); behaviour
differs where upstream fails silently (notes §5.1):

* bad input raises ``TypeError``/``ValueError`` naming the argument (upstream: bare asserts);
* keyword arguments that would change the result are rejected instead of swallowed by
  ``**kwargs``: ``attn_mask`` (not implemented by our kernels), ``dropout_p != 0``; SDPA's
  ``scale`` is accepted as an alias of ``sm_scale`` and ``enable_gqa`` is accepted (GQA is always
  on); any other keyword is a ``TypeError`` — a misspelt ``is_casual`` must not be dropped;
* head dims up to 256 (upstream: 128), every arch from sm75 to sm121 (``_support.py``);
* bf16 V is cast to fp16 for the FP16-P·V Triton paths, as upstream does: exact for
  6.1e-5 <= |v| <= 65504 (fp16 has more mantissa bits than bf16), and P rounded to fp16 is 8x
  finer than bf16. |v| > 65504 becomes inf (documented limit; detecting it would cost a host
  sync per call). Keeping V in bf16 would avoid that, but Triton 3.8's interpreter mis-rounds
  fp32 -> bf16 casts (a 16x16 test is off by 1e10), so that path could not be tested on CPU;
* the CUDA entry points raise ``RuntimeError`` naming what the build lacks, never fall back.

Arbitrary strides are accepted: Q and K are read through their strides by the quantizers, V is
copied only when its head dim must be padded or its last dim is not contiguous.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass

import torch

from . import _support

LOG2E = 1.4426950408889634

_LAYOUTS = ("HND", "NHD")
_DTYPES = (torch.float16, torch.bfloat16)
_MAX_HEAD_DIM = max(_support.TRITON_HEAD_DIMS)
# SDPA keywords a drop-in caller may pass; anything else is a TypeError.
_SDPA_KWARGS = ("attn_mask", "dropout_p", "scale", "enable_gqa")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ----------------------------------------------------------------------------------------------
# Validation.


def _check_kwargs(fn: str, kwargs: dict, sm_scale, attn_mask=None):
    """Apply the SDPA-compatible keywords; return the effective ``sm_scale``."""
    unknown = sorted(set(kwargs) - set(_SDPA_KWARGS))
    if unknown:
        raise TypeError(f"{fn}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    if attn_mask is None:
        attn_mask = kwargs.get("attn_mask")
    if attn_mask is not None:
        raise ValueError(
            f"{fn}: attn_mask is not implemented by the SageAttention kernels; pass attn_mask=None "
            "(use is_causal=True for a causal mask, or sageattn_varlen for padded batches)"
        )
    dropout_p = kwargs.get("dropout_p", 0.0)
    if dropout_p not in (0, 0.0, None):
        raise ValueError(f"{fn}: dropout_p={dropout_p!r} is not supported (inference kernels); pass 0.0")
    if "scale" in kwargs and kwargs["scale"] is not None:
        if sm_scale is not None and float(sm_scale) != float(kwargs["scale"]):
            raise ValueError(f"{fn}: scale={kwargs['scale']!r} and sm_scale={sm_scale!r} disagree; pass only sm_scale")
        sm_scale = kwargs["scale"]
    if sm_scale is not None:
        # numbers.Real: Python and NumPy scalars (np.float32 is not a float subclass).
        if isinstance(sm_scale, bool) or not isinstance(sm_scale, numbers.Real):
            raise TypeError(f"{fn}: sm_scale must be a float or None, got {type(sm_scale).__name__}")
        if not (float(sm_scale) > 0 and float(sm_scale) < float("inf")):
            raise ValueError(f"{fn}: sm_scale must be positive and finite, got {sm_scale!r}")
        sm_scale = float(sm_scale)
    return sm_scale


def _check_tensors(fn: str, names, tensors, ndim: int, layout_note: str) -> None:
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    q = tensors[0]
    for name, t in zip(names, tensors):
        if t.dtype not in _DTYPES:
            raise TypeError(f"{fn}: {name} must be torch.float16 or torch.bfloat16, got {t.dtype}")
        if t.dtype != q.dtype:
            raise TypeError(f"{fn}: q, k and v must share one dtype, got q {q.dtype} and {name} {t.dtype}")
        if t.dim() != ndim:
            raise ValueError(f"{fn}: {name} must be {ndim}-D {layout_note}, got shape {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{fn}: q, k and v must be on one device, got q on {q.device} and {name} on {t.device}")
    if q.device.type == "cuda":
        return
    if q.device.type == "cpu" and _interpreting():
        return
    raise ValueError(
        f"{fn}: q is on {q.device}; SageAttention needs CUDA tensors "
        "(CPU tensors only run under TRITON_INTERPRET=1, the Triton interpreter used by the tests)"
    )


def _check_layout(fn: str, tensor_layout) -> None:
    if tensor_layout not in _LAYOUTS:
        raise ValueError(f"{fn}: tensor_layout must be 'HND' ([B, H, L, D]) or 'NHD' ([B, L, H, D]), got {tensor_layout!r}")


def _check_choice(fn: str, name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {list(allowed)}, got {value!r}")


def _check_flag(fn: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__}")


def _dims(fn: str, q, k, v, tensor_layout: str, head_dims) -> tuple[int, int, int, int, int, int]:
    """Validate shapes; return ``(B, H_q, H_kv, L_q, L_k, D)``."""
    def bhld(t):
        b, x, y, d = t.shape
        return (b, x, y, d) if tensor_layout == "HND" else (b, y, x, d)

    b, hq, lq, d = bhld(q)
    bk, hkv, lk, dk = bhld(k)
    bv, hv, lv, dv = bhld(v)
    if bk != b or bv != b:
        raise ValueError(f"{fn}: batch sizes differ: q {b}, k {bk}, v {bv}")
    if dk != d or dv != d:
        raise ValueError(f"{fn}: head dims differ: q {d}, k {dk}, v {dv} (all must be equal)")
    if d < 1 or d > max(head_dims):
        raise ValueError(f"{fn}: head_dim {d} is not supported (1..{max(head_dims)}; padded to one of {head_dims})")
    if (hv, lv) != (hkv, lk):
        raise ValueError(f"{fn}: k and v must have the same heads and length, got k (H={hkv}, L={lk}) and v (H={hv}, L={lv})")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"{fn}: the number of query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    if lk == 0 and lq > 0:
        raise ValueError(f"{fn}: k and v have no tokens (L_k = 0): attention over no keys is undefined")
    return b, hq, hkv, lq, lk, d


def _padded_head_dim(d: int, head_dims) -> int:
    return next(h for h in head_dims if d <= h)


def _prepare_v(v: torch.Tensor, d_pad: int) -> torch.Tensor:
    """fp16 V with last dim ``d_pad`` and contiguous (one copy at most; none when already so)."""
    if v.dtype != torch.float16:
        v = v.to(torch.float16)
    if v.shape[-1] == d_pad and v.stride(-1) == 1:
        return v
    return torch.nn.functional.pad(v, (0, d_pad - v.shape[-1])).contiguous()


def _device_guard(t: torch.Tensor):
    # Triton launches on the *current* CUDA device; upstream calls torch.cuda.set_device(v.device)
    # for the same reason (multi-GPU illegal memory access, notes §1.2). A context manager
    # restores the caller's device afterwards.
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    import contextlib

    return contextlib.nullcontext()


def _natural_lse(lse2, q, k_mean, tensor_layout, sm_scale):
    """Base-2 LSE of the log2e-scaled *smoothed* scores -> natural-log LSE of the true scores.

    ``s_true = s_smoothed + sm_scale * q·k̄`` per row (K smoothing shifts every score of a row by
    the same amount), so ``lse = lse2 / log2(e) + sm_scale * q·k̄`` (q unpadded, fp32, GQA-aware).
    """
    lse = lse2 / LOG2E
    if k_mean is not None:
        qh = q if tensor_layout == "HND" else q.transpose(1, 2)
        km = k_mean.repeat_interleave(qh.shape[1] // k_mean.shape[1], dim=1)  # [B, H_q, 1, D]
        lse = lse + sm_scale * torch.matmul(qh.float(), km.transpose(-1, -2)).squeeze(-1)
    return lse


def _empty_result(q, return_lse, lse_shape):
    out = torch.empty_like(q)
    if return_lse:
        return out, torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    return out


# ----------------------------------------------------------------------------------------------
# Triton paths.


def _quantize_qk_cuda(q, k, *, tensor_layout, sm_scale, smooth_k, d_pad, q_group, k_group):
    """Per-block INT8 Q/K with the compiled quantizer (``quantization_backend="cuda"``)."""
    from . import _ops

    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    k_mean = _ops.mean_over_tokens(k, tensor_layout=tensor_layout) if smooth_k else None
    q_i8, q_scale = _ops.quant_per_block_int8(q, q_group, pre_scale=sm_scale * LOG2E, tensor_layout=tensor_layout)
    k_i8, k_scale = _ops.quant_per_block_int8(k, k_group, mean=k_mean, tensor_layout=tensor_layout)
    if q.shape[-1] != d_pad:
        # Zero channels change no score: pad the int8 tensors to the kernel's head dim.
        q_i8, k_i8 = (torch.nn.functional.pad(t, (0, d_pad - t.shape[-1])) for t in (q_i8, k_i8))
    return k_mean, q_i8, q_scale, k_i8, k_scale


def _triton_attention(
    fn, q, k, v, *, tensor_layout, is_causal, sm_scale, smooth_k, smooth_v, return_lse, pv,
    q_group=128, k_group=64, quantization_backend="triton",
):
    from .triton.quant_per_block_int8 import mean_over_tokens, quant_per_block_int8

    head_dims = _support.VARIANTS[fn].head_dims
    b, hq, hkv, lq, lk, d = _dims(fn, q, k, v, tensor_layout, head_dims)
    if b * hq * lq == 0:
        return _empty_result(q, return_lse, (b, hq, lq))
    d_pad = _padded_head_dim(d, head_dims)
    if sm_scale is None:
        sm_scale = d**-0.5
    with _device_guard(q):
        if quantization_backend == "cuda":
            k_mean, q_i8, q_scale, k_i8, k_scale = _quantize_qk_cuda(
                q, k, tensor_layout=tensor_layout, sm_scale=sm_scale, smooth_k=smooth_k, d_pad=d_pad,
                q_group=q_group, k_group=k_group,
            )
        else:
            k_mean = mean_over_tokens(k, tensor_layout=tensor_layout) if smooth_k else None
            q_i8, q_scale = quant_per_block_int8(
                q, block_size=q_group, pre_scale=sm_scale * LOG2E, tensor_layout=tensor_layout,
                head_dim_out=d_pad,
            )
            k_i8, k_scale = quant_per_block_int8(
                k, block_size=k_group, mean=k_mean, tensor_layout=tensor_layout, head_dim_out=d_pad
            )
        if pv == "fp16":
            from .triton.attn_qk_int8_pv_fp16 import attn_qk_int8_pv_fp16

            out, lse2 = attn_qk_int8_pv_fp16(
                q_i8, k_i8, _prepare_v(v, d_pad), q_scale, k_scale, tensor_layout=tensor_layout,
                is_causal=is_causal, pv_accum_dtype="fp32", output_dtype=q.dtype,
                return_lse=return_lse, q_group=q_group, k_group=k_group,
            )
        else:
            from .triton.attn_qk_int8_pv_fp8 import attn_qk_int8_pv_fp8
            from .triton.quant_per_channel_fp8 import quant_per_channel_fp8

            # Token-contiguous V ([B, H, D, L] storage): the K-major B operand of the FP8 MMA
            # (wgmma takes FP8 B operands only K-major), read by the kernel through strides.
            v_fp8, v_scale, v_mean = quant_per_channel_fp8(
                v, tensor_layout=tensor_layout, smooth_v=smooth_v, head_dim_out=d_pad, token_contiguous=True
            )
            out, lse2 = attn_qk_int8_pv_fp8(
                q_i8, k_i8, v_fp8, q_scale, k_scale, v_scale, tensor_layout=tensor_layout,
                is_causal=is_causal, output_dtype=torch.float32 if smooth_v else q.dtype,
                return_lse=return_lse, q_group=q_group, k_group=k_group,
            )
            if smooth_v:
                # Rows of P sum to 1, so O(V) = O(V - v̄) + v̄ (notes §2.3.6).
                vm = v_mean.repeat_interleave(hq // hkv, dim=1)  # [B, H_q, 1, D_pad]
                out = (out + (vm if tensor_layout == "HND" else vm.transpose(1, 2))).to(q.dtype)
    out = out[..., :d]
    if not return_lse:
        return out
    return out, _natural_lse(lse2, q, k_mean, tensor_layout, sm_scale)


def sageattn_qk_int8_pv_fp16_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    quantization_backend: str = "triton",
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    return_lse: bool = False,
    **kwargs,
):
    """SageAttention with INT8 Q·Kᵀ (per-block) and 16-bit P·V (fp32 accumulate), in Triton.

    Parameters
    ----------
    q : Tensor, float16 or bfloat16, ``[B, H_q, L_q, D]`` ("HND") or ``[B, L_q, H_q, D]`` ("NHD")
    k, v : Tensor, q's dtype and device, ``[B, H_kv, L_k, D]`` / ``[B, L_k, H_kv, D]``
        ``H_q`` must be a multiple of ``H_kv`` (GQA/MQA). ``L_q`` may differ from ``L_k``.
        ``D <= 256``; zero-padded to 64, 128 or 256 internally. Any strides.
    tensor_layout : {"HND", "NHD"}
    quantization_backend : {"triton", "cuda"}
        "cuda" needs the compiled quantizer (``sageattention._C``); otherwise RuntimeError.
    is_causal : bool
        Top-left aligned causal mask (query ``i`` sees keys ``0..i``), as SDPA.
    attn_mask : None
        Not implemented (ValueError otherwise).
    sm_scale : float, optional
        Softmax scale, default ``1 / sqrt(D)`` (of the unpadded D). SDPA's ``scale=`` is an alias.
    smooth_k : bool
        Subtract the per-(batch, head) channel mean of K before quantizing (SageAttention §3.2);
        exact for the output, corrected for in the LSE.
    return_lse : bool
        Also return the natural-log logsumexp of the scaled scores, float32 ``[B, H_q, L_q]``.
    **kwargs
        SDPA keywords ``dropout_p`` (must be 0), ``scale``, ``enable_gqa``; others raise TypeError.

    Returns
    -------
    out : Tensor, q's dtype, shape and layout; ``(out, lse)`` with ``return_lse``.

    Archs: sm75+ (sm75 needs triton < 3.3, see ``_support.py``); CPU under ``TRITON_INTERPRET=1``.
    """
    fn = "sageattn_qk_int8_pv_fp16_triton"
    sm_scale = _check_kwargs(fn, kwargs, sm_scale, attn_mask)
    _check_tensors(fn, ("q", "k", "v"), (q, k, v), 4, f"({tensor_layout})")
    _check_layout(fn, tensor_layout)
    _check_choice(fn, "quantization_backend", quantization_backend, ("triton", "cuda"))
    for name, flag in (("is_causal", is_causal), ("smooth_k", smooth_k), ("return_lse", return_lse)):
        _check_flag(fn, name, flag)
    if quantization_backend == "cuda":
        for op in _support.CUDA_HELPER_OPS:
            _require_cuda_op(fn, op)
        if q.device.type != "cuda":
            raise ValueError(f"{fn}: quantization_backend='cuda' needs CUDA tensors, got q on {q.device}")
    return _triton_attention(
        fn, q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
        smooth_k=smooth_k, smooth_v=False, return_lse=return_lse, pv="fp16",
        quantization_backend=quantization_backend,
    )


def sageattn_qk_int8_pv_fp8_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    smooth_v: bool = False,
    return_lse: bool = False,
    **kwargs,
):
    """SageAttention2 (8-bit) in Triton: INT8 Q·Kᵀ per block, FP8 e4m3 P·V with two-level
    accumulation, V per-channel e4m3 (not in upstream; sm89+).

    Parameters
    ----------
    q, k, v, tensor_layout, is_causal, sm_scale, smooth_k, return_lse, **kwargs
        As :func:`sageattn_qk_int8_pv_fp16_triton`.
    smooth_v : bool
        Subtract V's per-channel mean before the FP8 cast and add it back to the output
        (SageAttention2 §3.4; helps when V has a channel bias).

    Returns
    -------
    out : Tensor, q's dtype, shape and layout; ``(out, lse)`` with ``return_lse``.

    Archs: sm89+ (Ada, Hopper, Blackwell) — Triton has no e4m3 dot before sm89; CPU under
    ``TRITON_INTERPRET=1``.
    """
    fn = "sageattn_qk_int8_pv_fp8_triton"
    sm_scale = _check_kwargs(fn, kwargs, sm_scale)
    _check_tensors(fn, ("q", "k", "v"), (q, k, v), 4, f"({tensor_layout})")
    _check_layout(fn, tensor_layout)
    for name, flag in (("is_causal", is_causal), ("smooth_k", smooth_k), ("smooth_v", smooth_v), ("return_lse", return_lse)):
        _check_flag(fn, name, flag)
    return _triton_attention(
        fn, q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
        smooth_k=smooth_k, smooth_v=smooth_v, return_lse=return_lse, pv="fp8",
    )


def sageattn_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    is_causal: bool = False,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    **kwargs,
):
    """SageAttention over packed variable-length sequences (Triton, INT8 Q·Kᵀ, 16-bit P·V).

    Parameters
    ----------
    q : Tensor, float16 or bfloat16, ``[T_q, H_q, D]``
        Sequence ``b`` owns rows ``cu_seqlens_q[b] : cu_seqlens_q[b + 1]``.
    k, v : Tensor, ``[T_k, H_kv, D]``; ``H_q`` a multiple of ``H_kv``; ``D <= 256``.
    cu_seqlens_q, cu_seqlens_k : Tensor, torch.int32, ``[B + 1]``, on q's device
        Cumulative lengths: 0 first, ``T`` last, non-decreasing (checked, one host sync).
    max_seqlen_q, max_seqlen_k : int
        Upper bounds of the sequence lengths (as flash-attn; smaller than the true maxima is an error).
    is_causal : bool
        Top-left aligned within each sequence.
    sm_scale : float, optional
        Default ``1 / sqrt(D)``.
    smooth_k : bool
        K mean subtracted *per sequence* (upstream takes one mean over all sequences).
    **kwargs
        As :func:`sageattn_qk_int8_pv_fp16_triton`.

    Returns
    -------
    out : Tensor, q's dtype, ``[T_q, H_q, D]``.

    Archs: sm75+ (as the FP16 Triton path); CPU under ``TRITON_INTERPRET=1``.
    """
    from .triton.quant_per_block_int8 import mean_over_tokens, quant_per_block_int8

    fn = "sageattn_varlen"
    sm_scale = _check_kwargs(fn, kwargs, sm_scale)
    _check_tensors(fn, ("q", "k", "v"), (q, k, v), 3, "[T, H, D]")
    _check_flag(fn, "is_causal", is_causal)
    _check_flag(fn, "smooth_k", smooth_k)
    tq, hq, d = q.shape
    tk, hkv, dk = k.shape
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"{fn}: v shape {tuple(v.shape)} must equal k shape {tuple(k.shape)}")
    if dk != d:
        raise ValueError(f"{fn}: head dims differ: q {d}, k {dk}")
    if d < 1 or d > _MAX_HEAD_DIM:
        raise ValueError(f"{fn}: head_dim {d} is not supported (1..{_MAX_HEAD_DIM})")
    if hkv == 0 or hq % hkv:
        raise ValueError(f"{fn}: the number of query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    lengths = {}
    for name, cu, total, max_name, max_len in (
        ("cu_seqlens_q", cu_seqlens_q, tq, "max_seqlen_q", max_seqlen_q),
        ("cu_seqlens_k", cu_seqlens_k, tk, "max_seqlen_k", max_seqlen_k),
    ):
        if not isinstance(cu, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(cu).__name__}")
        if cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 2:
            raise TypeError(f"{fn}: {name} must be a 1-D torch.int32 tensor of B + 1 >= 2 offsets, got {cu.dtype} {tuple(cu.shape)}")
        if cu.device != q.device:
            raise ValueError(f"{fn}: {name} is on {cu.device} but q is on {q.device}")
        if isinstance(max_len, bool) or not isinstance(max_len, int):
            raise TypeError(f"{fn}: {max_name} must be an int, got {type(max_len).__name__}")
        host = cu.tolist()
        steps = [b - a for a, b in zip(host, host[1:])]
        if host[0] != 0 or host[-1] != total or min(steps) < 0:
            raise ValueError(f"{fn}: {name} must start at 0, end at {total} (the packed length) and not decrease, got {host}")
        if max(steps) > max_len:
            raise ValueError(f"{fn}: {max_name}={max_len} but the longest sequence in {name} has {max(steps)} tokens")
        lengths[name] = steps
    # An upper bound is accepted (flash-attn and upstream callers pass one); the kernels get the
    # true maxima, known from the host copy above, so no grid block is launched for nothing.
    max_seqlen_q, max_seqlen_k = max(lengths["cu_seqlens_q"]), max(lengths["cu_seqlens_k"])
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"{fn}: cu_seqlens_q and cu_seqlens_k must have the same length (B + 1), got {cu_seqlens_q.numel()} and {cu_seqlens_k.numel()}")
    if any(lk == 0 and lq > 0 for lq, lk in zip(lengths["cu_seqlens_q"], lengths["cu_seqlens_k"])):
        raise ValueError(f"{fn}: a sequence has queries but no keys (cu_seqlens_k step of 0)")
    # The kernels read cu_seqlens[b] at offset b: a strided view (e.g. cu[::2]) must be compacted.
    cu_seqlens_q, cu_seqlens_k = cu_seqlens_q.contiguous(), cu_seqlens_k.contiguous()
    if tq == 0:
        return torch.empty_like(q)
    d_pad = _padded_head_dim(d, _support.TRITON_HEAD_DIMS)
    if sm_scale is None:
        sm_scale = d**-0.5
    from .triton.attn_varlen import attn_varlen_qk_int8_pv_fp16

    with _device_guard(q):
        k_mean = (
            mean_over_tokens(k, cu_seqlens=cu_seqlens_k, max_seqlen=max_seqlen_k) if smooth_k else None
        )
        q_i8, q_scale = quant_per_block_int8(
            q, block_size=128, pre_scale=sm_scale * LOG2E, head_dim_out=d_pad,
            cu_seqlens=cu_seqlens_q, max_seqlen=max_seqlen_q,
        )
        k_i8, k_scale = quant_per_block_int8(
            k, block_size=64, mean=k_mean, head_dim_out=d_pad, cu_seqlens=cu_seqlens_k, max_seqlen=max_seqlen_k,
        )
        out = attn_varlen_qk_int8_pv_fp16(
            q_i8, k_i8, _prepare_v(v, d_pad), q_scale, k_scale, cu_seqlens_q, cu_seqlens_k,
            max_seqlen_q, max_seqlen_k, is_causal=is_causal, output_dtype=q.dtype, q_group=128, k_group=64,
        )
    return out[..., :d]


# ----------------------------------------------------------------------------------------------
# CUDA paths (compiled kernels; raise RuntimeError when the build lacks them).


def _require_cuda_op(fn: str, op: str, device: torch.device | None = None) -> None:
    if op in _support.built_cuda_ops():
        archs = (_support.built_op_archs() or {}).get(op)
        if device is None or device.type != "cuda" or archs is None:
            return
        cap = torch.cuda.get_device_capability(device)
        if any(_support.arch_runs_on(a, cap) for a in archs.split(";") if a):
            return
        raise RuntimeError(
            f"{fn}: this build compiled sageattention::{op} for archs {archs}, none of which runs on "
            f"this sm{cap[0]}{cap[1]} GPU ({torch.cuda.get_device_name(device)}). Install a wheel built "
            "for it, or use sageattn(), which picks a kernel this GPU can run."
        )
    try:
        from . import _ops

        available = _ops.cuda_ops_available()
    except ImportError:
        available = False
    reason = _support.missing_cuda_reason()
    what = (
        f"this build's sageattention._C has no op sageattention::{op}" if available
        else f"the compiled extension is not available: {reason}"
    )
    raise RuntimeError(
        f"{fn} needs the compiled CUDA kernels, and {what}. Install a wheel built for your GPU, "
        "or use sageattn() / the *_triton variants (no compiled code needed)."
    )


def _check_cuda_call(fn, q, k, v, tensor_layout, flags, choices, sm_scale, kwargs):
    """Validate a public CUDA function's arguments; return ``(sm_scale, dims)``: the effective
    softmax scale (``scale=`` applied, None for the default) and :func:`_dims`."""
    sm_scale = _check_kwargs(fn, kwargs, sm_scale)
    _check_tensors(fn, ("q", "k", "v"), (q, k, v), 4, f"({tensor_layout})")
    _check_layout(fn, tensor_layout)
    for name, flag in flags:
        _check_flag(fn, name, flag)
    for name, value, allowed in choices:
        _check_choice(fn, name, value, allowed)
    return sm_scale, _dims(fn, q, k, v, tensor_layout, _support.VARIANTS[fn].head_dims)


#: Tile geometry of the mma.sync kernels (csrc/qattn/qk_int8_attn.cuh): 128 query rows per CTA in
#: 16-row warp slabs, 64 keys per KV step. The quantizers' groups must match it.
_CUDA_BLOCK_Q, _CUDA_WARP_Q, _CUDA_BLOCK_K = 128, 16, 64
#: e4m3 range of V per P·V accumulation (notes §2.4): 2.25 keeps 64 products of the fp16-accumulated
#: FP8 MMA (P <= 448) below 65504; the fp32-accumulated modes use the full 448.
_FP8_V_SCALE_MAX = {"fp32": 448.0, "fp32+fp32": 448.0, "fp32+fp16": 2.25}


def _aligned16(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its start and strides are 16-byte multiples (cp.async rows), else a copy."""
    size = t.element_size()
    if t.data_ptr() % 16 == 0 and t.stride(-1) == 1 and all((s * size) % 16 == 0 for s in t.stride()[:-1]):
        return t
    return t.contiguous()


@dataclass
class _CudaOperands:
    """Inputs of the compiled mma.sync attention ops, as :func:`_cuda_quantize` prepares them."""

    q_i8: torch.Tensor
    q_scale: torch.Tensor
    k_i8: torch.Tensor
    k_scale: torch.Tensor
    v: torch.Tensor  # fp16/bf16 V padded to the kernel's head dim, or the FP8 operand (_ops.fp8_v_operand)
    v_scale: torch.Tensor | None  # FP8 only: per-channel scale
    k_mean: torch.Tensor | None  # for the LSE correction
    v_mean: torch.Tensor | None  # smooth_v: added back to the output, in v's layout, unpadded


#: Which quantizers feed the CUDA attention ops: "triton" (sageattention/triton/) or "cuda" (the
#: fused kernels of csrc/fused/, one op call: quant_mma_operands, compiled into every build that
#: has the attention ops). "cuda": they passed their GPU tests and were already faster on the H100
#: as five single-op launches (FP8 operands, B=4 H=32 bf16, hd128: 0.20 / 0.72 / 2.73 ms vs Triton
#: 0.60 / 1.24 / 4.41 ms at 1K / 4K / 16K; hd64 16K was the one case where Triton won, 1.84 vs
#: 2.01 ms; benchmarks/results/h100-2026-11-23-session3/). The fused op (three launches, 16-byte
#: loads, Q once and K, V twice from global memory) takes 0.15 / 0.46 / 1.68 ms (hd128) and
#: 0.11 / 0.28 / 0.95 ms (hd64) there (benchmarks/results/h100-2026-11-23-session4/).
_CUDA_QUANTIZATION_BACKEND = "cuda"


def _cuda_quantize(q, k, v, *, tensor_layout, qk_quant_gran, sm_scale, pv_accum_dtype, smooth_k, smooth_v, pv, d,
                   d_pad, quantization_backend=None) -> _CudaOperands:
    """Quantize for the mma.sync kernels (per-thread/per-warp groups of the mma layout) with the
    Triton or the CUDA quantizers (``quantization_backend``, default :data:`_CUDA_QUANTIZATION_BACKEND`);
    both give the same bytes except where the K/V means' summation order differs. Shared by the
    public functions and the kernel-only benchmark."""
    backend = _CUDA_QUANTIZATION_BACKEND if quantization_backend is None else quantization_backend
    if backend not in ("triton", "cuda"):
        raise ValueError(f"quantization_backend must be 'triton' or 'cuda', got {backend!r}")
    if backend == "cuda":
        return _cuda_quantize_fused(q, k, v, tensor_layout=tensor_layout, qk_quant_gran=qk_quant_gran,
                                    sm_scale=sm_scale, pv_accum_dtype=pv_accum_dtype, smooth_k=smooth_k,
                                    smooth_v=smooth_v, pv=pv, d=d, d_pad=d_pad)
    with _device_guard(q):  # Triton launches on the current device
        return _cuda_quantize_triton(q, k, v, tensor_layout=tensor_layout, qk_quant_gran=qk_quant_gran,
                                     sm_scale=sm_scale, pv_accum_dtype=pv_accum_dtype, smooth_k=smooth_k,
                                     smooth_v=smooth_v, pv=pv, d=d, d_pad=d_pad)


def _cuda_quantize_triton(q, k, v, *, tensor_layout, qk_quant_gran, sm_scale, pv_accum_dtype, smooth_k, smooth_v,
                          pv, d, d_pad) -> _CudaOperands:
    """:func:`_cuda_quantize` with the Triton quantizers."""
    from . import _ops
    from .triton.quant_per_block_int8 import mean_over_tokens, quant_per_block_int8
    from .triton.quant_per_thread_int8 import quant_per_thread_int8, quant_per_warp_int8

    k_mean = mean_over_tokens(k, tensor_layout=tensor_layout) if smooth_k else None
    pre = sm_scale * LOG2E  # folded into Q's scale: the kernel's scores are then in log2 units
    if qk_quant_gran == "per_thread":
        q_i8, q_scale = quant_per_thread_int8(
            q, block=_CUDA_BLOCK_Q, warp=_CUDA_WARP_Q, groups_per_warp=8, pre_scale=pre,
            tensor_layout=tensor_layout, head_dim_out=d_pad,
        )
        k_i8, k_scale = quant_per_thread_int8(
            k, block=_CUDA_BLOCK_K, warp=_CUDA_BLOCK_K, groups_per_warp=4, mean=k_mean,
            tensor_layout=tensor_layout, head_dim_out=d_pad,
        )
    else:
        q_i8, q_scale = quant_per_warp_int8(
            q, block=_CUDA_BLOCK_Q, warp=_CUDA_WARP_Q, pre_scale=pre, tensor_layout=tensor_layout,
            head_dim_out=d_pad,
        )
        k_i8, k_scale = quant_per_block_int8(
            k, block_size=_CUDA_BLOCK_K, mean=k_mean, tensor_layout=tensor_layout, head_dim_out=d_pad
        )
    if pv == "fp16":
        return _fp16_v_operands(q_i8, q_scale, k_i8, k_scale, v, k_mean, tensor_layout, smooth_v, d_pad)
    from .triton.quant_per_channel_fp8 import quant_per_channel_fp8

    v_fp8, v_scale, v_mean = quant_per_channel_fp8(
        v, tensor_layout=tensor_layout, scale_max=_FP8_V_SCALE_MAX[pv_accum_dtype], smooth_v=smooth_v,
        head_dim_out=d_pad,
    )
    return _CudaOperands(q_i8, q_scale, k_i8, k_scale, _ops.fp8_v_operand(v_fp8, tensor_layout), v_scale, k_mean,
                         _v_mean_in_layout(v_mean, tensor_layout, d))


def _cuda_quantize_fused(q, k, v, *, tensor_layout, qk_quant_gran, sm_scale, pv_accum_dtype, smooth_k, smooth_v,
                         pv, d, d_pad) -> _CudaOperands:
    """:func:`_cuda_quantize` with the CUDA quantizers: one op call, ``sageattention::quant_mma_operands``
    (K mean and V statistics in one launch, the V operand in a second, Q and K in a third; the
    single ops called one by one needed five launches and four dispatcher calls). The public
    functions validated the arguments, so the op's Python wrapper checks are skipped."""
    from . import _ops

    # The op reads any strides with a contiguous last dim (the common case: no copy).
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    fp8 = pv != "fp16"
    # per_thread: 8 Q groups per 16-row slab, 4 K groups per 64 keys; per_warp: one group each.
    q_groups, k_groups = (8, 4) if qk_quant_gran == "per_thread" else (1, 1)
    q_i8, q_scale, k_i8, k_scale, k_mean, v_operand, v_scale, v_mean = _ops._quant_mma_operands(
        q, k, v if fp8 else None, sm_scale * LOG2E, q_groups, k_groups, smooth_k,
        _FP8_V_SCALE_MAX[pv_accum_dtype] if fp8 else _FP8_V_SCALE_MAX["fp32"], smooth_v and fp8, tensor_layout, d_pad,
        _CUDA_BLOCK_Q, _CUDA_WARP_Q, _CUDA_BLOCK_K, _CUDA_BLOCK_K,
    )
    if not fp8:
        return _fp16_v_operands(q_i8, q_scale, k_i8, k_scale, v, k_mean, tensor_layout, smooth_v, d_pad)
    return _CudaOperands(q_i8, q_scale, k_i8, k_scale, v_operand, v_scale, k_mean,
                         _v_mean_in_layout(v_mean, tensor_layout, d))


def _fp16_v_operands(q_i8, q_scale, k_i8, k_scale, v, k_mean, tensor_layout, smooth_v, d_pad) -> _CudaOperands:
    v_mean = None
    if smooth_v:
        # Rows of P sum to 1, so O(V) = O(V - v̄) + v̄ (notes §2.3.6).
        v_mean = v.float().mean(dim=2 if tensor_layout == "HND" else 1, keepdim=True)
        v = (v.float() - v_mean).to(v.dtype)
    return _CudaOperands(q_i8, q_scale, k_i8, k_scale, _aligned16(_prepare_v(v, d_pad)), None, k_mean, v_mean)


def _v_mean_in_layout(v_mean, tensor_layout, d):
    """``[B, H, 1, D_pad]`` -> v's layout, unpadded (None stays None)."""
    if v_mean is None:
        return None
    return (v_mean if tensor_layout == "HND" else v_mean.transpose(1, 2))[..., :d]


#: (function, device) pairs whose compiled op this process found runnable. The build and the GPU
#: do not change under a running process, and the check costs ~50-70 us of host time per call
#: (``_support.built_cuda_ops`` looks every op up in the dispatcher; measured on CPU), more than
#: the quantizers' GPU time at 1K tokens.
_RUNNABLE_CUDA_CALLS: set = set()


def _cuda_attention(
    fn, q, k, v, *, dims, tensor_layout, is_causal, qk_quant_gran, sm_scale, pv_accum_dtype, smooth_k, smooth_v,
    return_lse, pv,
):
    """Check (once per process) that this build can run ``fn`` on q's GPU, quantize
    (:func:`_cuda_quantize`), call the compiled op, slice the head-dim padding off and convert
    the LSE. ``dims``: :func:`_dims` of the validated arguments.

    No Python device guard: the compiled ops set the device of their tensors themselves
    (``c10::cuda::CUDAGuard``) and every allocation here names its device."""
    from . import _ops

    if (fn, q.device) not in _RUNNABLE_CUDA_CALLS:
        _require_cuda_op(fn, _support.VARIANTS[fn].cuda_op, q.device)
        if q.device.type != "cuda":
            raise ValueError(f"{fn}: needs CUDA tensors, got q on {q.device}")
        _RUNNABLE_CUDA_CALLS.add((fn, q.device))
    head_dims = _support.VARIANTS[fn].head_dims
    b, hq, hkv, lq, lk, d = dims
    if b * hq * lq == 0:
        return _empty_result(q, return_lse, (b, hq, lq))
    d_pad = _padded_head_dim(d, head_dims)
    if sm_scale is None:
        sm_scale = d**-0.5
    ops = _cuda_quantize(
        q, k, v, tensor_layout=tensor_layout, qk_quant_gran=qk_quant_gran, sm_scale=sm_scale,
        pv_accum_dtype=pv_accum_dtype, smooth_k=smooth_k, smooth_v=smooth_v, pv=pv, d=d, d_pad=d_pad,
    )
    common = dict(tensor_layout=tensor_layout, is_causal=is_causal, qk_quant_gran=qk_quant_gran, qk_scale=1.0,
                  pv_accum_dtype=pv_accum_dtype, output_dtype=q.dtype, return_lse=return_lse)
    if pv == "fp16":
        out, lse2 = _ops.qk_int8_sv_f16_attn(ops.q_i8, ops.k_i8, ops.v, ops.q_scale, ops.k_scale, **common)
    else:
        # The sm89 and sm90 FP8 ops take the same operands (_ops.fp8_v_operand).
        fp8_op = getattr(_ops, _support.VARIANTS[fn].cuda_op)
        out, lse2 = fp8_op(ops.q_i8, ops.k_i8, ops.v, ops.v_scale, ops.q_scale, ops.k_scale, **common)
    if d != d_pad:
        out = out[..., :d]
    if ops.v_mean is not None:
        vm = ops.v_mean.repeat_interleave(hq // hkv, dim=1 if tensor_layout == "HND" else 2)
        out = (out.float() + vm).to(q.dtype)
    if not return_lse:
        return out
    return out, _natural_lse(lse2, q, ops.k_mean, tensor_layout, sm_scale)


def sageattn_qk_int8_pv_fp16_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32",
    smooth_k: bool = True,
    smooth_v: bool = False,
    return_lse: bool = False,
    **kwargs,
):
    """SageAttention2 CUDA kernel: INT8 Q·Kᵀ, FP16 P·V (sm80+).

    Parameters
    ----------
    q, k, v, tensor_layout, is_causal, sm_scale, smooth_k, return_lse, **kwargs
        As :func:`sageattn_qk_int8_pv_fp16_triton`, but ``D <= 128`` (padded to 64/128).
    qk_quant_gran : {"per_thread", "per_warp"}
    pv_accum_dtype : {"fp32", "fp16+fp32", "fp16"}
    smooth_v : bool
        Only with ``pv_accum_dtype="fp16"`` (ValueError otherwise; upstream warns and ignores).

    Returns
    -------
    out (and lse) as :func:`sageattn_qk_int8_pv_fp16_triton`.

    Raises
    ------
    RuntimeError
        This build has no compiled kernel for it (the message names what is missing).

    Archs: sm80, sm86, sm87, sm89, sm90, sm100+ (see ``_support.VARIANTS``).
    """
    fn = "sageattn_qk_int8_pv_fp16_cuda"
    sm_scale, dims = _check_cuda_call(
        fn, q, k, v, tensor_layout,
        (("is_causal", is_causal), ("smooth_k", smooth_k), ("smooth_v", smooth_v), ("return_lse", return_lse)),
        (("qk_quant_gran", qk_quant_gran, ("per_thread", "per_warp")),
         ("pv_accum_dtype", pv_accum_dtype, ("fp32", "fp16+fp32", "fp16"))),
        sm_scale, kwargs,
    )
    if smooth_v and pv_accum_dtype != "fp16":
        raise ValueError(f"{fn}: smooth_v=True needs pv_accum_dtype='fp16', got {pv_accum_dtype!r}")
    return _cuda_attention(
        fn, q, k, v, dims=dims, tensor_layout=tensor_layout, is_causal=is_causal, qk_quant_gran=qk_quant_gran,
        sm_scale=sm_scale, pv_accum_dtype=pv_accum_dtype, smooth_k=smooth_k, smooth_v=smooth_v,
        return_lse=return_lse, pv="fp16",
    )


def sageattn_qk_int8_pv_fp8_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32+fp16",
    smooth_k: bool = True,
    smooth_v: bool = False,
    return_lse: bool = False,
    **kwargs,
):
    """SageAttention2/2++ CUDA kernel: INT8 Q·Kᵀ, FP8 P·V (sm89, sm100+, sm120/121).

    Parameters
    ----------
    q, k, v, tensor_layout, is_causal, sm_scale, smooth_k, return_lse, **kwargs
        As :func:`sageattn_qk_int8_pv_fp16_cuda`.
    qk_quant_gran : {"per_thread", "per_warp"}
    pv_accum_dtype : {"fp32+fp16", "fp32+fp32", "fp32"}
        "fp32+fp16" is SageAttention2++ (FP16-accumulated FP8 MMA, V scaled to ±2.25).
    smooth_v : bool
        Only with ``pv_accum_dtype="fp32"`` (ValueError otherwise).

    Raises
    ------
    RuntimeError
        This build has no compiled kernel for it.
    """
    fn = "sageattn_qk_int8_pv_fp8_cuda"
    sm_scale, dims = _check_cuda_call(
        fn, q, k, v, tensor_layout,
        (("is_causal", is_causal), ("smooth_k", smooth_k), ("smooth_v", smooth_v), ("return_lse", return_lse)),
        (("qk_quant_gran", qk_quant_gran, ("per_thread", "per_warp")),
         ("pv_accum_dtype", pv_accum_dtype, ("fp32+fp16", "fp32+fp32", "fp32"))),
        sm_scale, kwargs,
    )
    if smooth_v and pv_accum_dtype != "fp32":
        raise ValueError(f"{fn}: smooth_v=True needs pv_accum_dtype='fp32', got {pv_accum_dtype!r}")
    return _cuda_attention(
        fn, q, k, v, dims=dims, tensor_layout=tensor_layout, is_causal=is_causal, qk_quant_gran=qk_quant_gran,
        sm_scale=sm_scale, pv_accum_dtype=pv_accum_dtype, smooth_k=smooth_k, smooth_v=smooth_v,
        return_lse=return_lse, pv="fp8",
    )


def sageattn_qk_int8_pv_fp8_cuda_sm90(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32+fp32",
    smooth_k: bool = True,
    return_lse: bool = False,
    **kwargs,
):
    """SageAttention2 Hopper kernel (wgmma): INT8 Q·Kᵀ, FP8 P·V, sm90 (H100/H200) only, built for ``9.0a``.

    Same operands as :func:`sageattn_qk_int8_pv_fp8_cuda` (Q/K INT8 per thread or per warp, V FP8
    e4m3 per channel); P·V is accumulated per 128-key block from zero and added to FP32 (two-level
    accumulation). Head dims 64 and 128 natively, others up to 128 padded. TMA loads, a producer
    warpgroup and two consumer warpgroups (csrc/qattn/qk_int8_attn_sm90.cuh). Measured on the H100
    (``benchmarks/results/``): the fastest path there (16K, hd128: ~700 TOPS end to end vs ~600
    for :func:`sageattn_qk_int8_pv_fp8_triton`), so ``sageattn`` uses it on sm90.

    Parameters
    ----------
    q, k, v, tensor_layout, is_causal, sm_scale, smooth_k, return_lse, **kwargs
        As :func:`sageattn_qk_int8_pv_fp16_cuda`.
    qk_quant_gran : {"per_thread", "per_warp"}
    pv_accum_dtype : {"fp32+fp32"}
        The only mode (upstream raises NotImplementedError for "fp32"; we raise ValueError).

    Raises
    ------
    RuntimeError
        This build has no compiled kernel for it.
    """
    fn = "sageattn_qk_int8_pv_fp8_cuda_sm90"
    sm_scale, dims = _check_cuda_call(
        fn, q, k, v, tensor_layout,
        (("is_causal", is_causal), ("smooth_k", smooth_k), ("return_lse", return_lse)),
        (("qk_quant_gran", qk_quant_gran, ("per_thread", "per_warp")),
         ("pv_accum_dtype", pv_accum_dtype, ("fp32+fp32",))),
        sm_scale, kwargs,
    )
    return _cuda_attention(
        fn, q, k, v, dims=dims, tensor_layout=tensor_layout, is_causal=is_causal, qk_quant_gran=qk_quant_gran,
        sm_scale=sm_scale, pv_accum_dtype=pv_accum_dtype, smooth_k=smooth_k, smooth_v=False,
        return_lse=return_lse, pv="fp8",
    )


# ----------------------------------------------------------------------------------------------
# Arch dispatch.

_ENTRY_POINTS = {
    "sageattn_qk_int8_pv_fp16_triton": sageattn_qk_int8_pv_fp16_triton,
    "sageattn_qk_int8_pv_fp8_triton": sageattn_qk_int8_pv_fp8_triton,
    "sageattn_qk_int8_pv_fp16_cuda": sageattn_qk_int8_pv_fp16_cuda,
    "sageattn_qk_int8_pv_fp8_cuda": sageattn_qk_int8_pv_fp8_cuda,
    "sageattn_qk_int8_pv_fp8_cuda_sm90": sageattn_qk_int8_pv_fp8_cuda_sm90,
}


def sageattn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    return_lse: bool = False,
    **kwargs,
):
    """SageAttention, dispatched on the GPU's compute capability (``_support.SAGEATTN_PREFERENCE``).

    The variant is chosen deterministically from the support table: the best compiled CUDA kernel
    for the arch when this build has it, else the Triton path (FP8 P·V on sm89+, FP16 P·V below).
    Nothing is printed and nothing falls back at call time; an arch without a usable variant raises
    ``RuntimeError`` naming what is missing. Under ``TRITON_INTERPRET=1`` on CPU tensors the FP16
    Triton path runs (no GPU to dispatch on).

    Parameters
    ----------
    q, k, v, tensor_layout, is_causal, sm_scale, return_lse, **kwargs
        As :func:`sageattn_qk_int8_pv_fp16_triton`; ``**kwargs`` reach the chosen variant, so
        ``smooth_k=False`` turns K smoothing off (it is on by default).

    Returns
    -------
    out : Tensor, q's dtype, shape and layout; ``(out, lse)`` with ``return_lse``.

    Archs: sm75 .. sm121.
    """
    fn = "sageattn"
    _check_tensors(fn, ("q", "k", "v"), (q, k, v), 4, f"({tensor_layout})")
    if q.device.type == "cuda":
        capability = torch.cuda.get_device_capability(q.device)
        selection = _support.select_kernel(
            capability, _support.built_cuda_ops(), _support.installed_triton_version(), _support.built_op_archs()
        )
    else:
        selection = _support.Selection("sageattn_qk_int8_pv_fp16_triton", {})
    call = _ENTRY_POINTS[selection.name]
    return call(
        q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
        return_lse=return_lse, **selection.kwargs, **kwargs,
    )
