"""Public entry point ``sageattn3_blackwell`` and its dispatcher.

Three outcomes, nothing falls back silently:

* a Blackwell GPU whose arch this build compiled (``sageattn3._build_info``: 10.0a → sm100,
  10.3a → sm103, 12.0a → sm120, 12.1a → sm121; arch-specific code runs on that arch only): the
  NVFP4 kernel of ``csrc/attn_fwd.cu`` through :func:`sageattn3._ops.attn_forward`. The sm_120a/
  sm_121a code uses the hardware block-scaled FP4 MMA, the sm_100a/sm_103a code a software FP4
  MMA (fp16 tensor cores on dequantized blocks). Both were compiled with nvcc 13.0; **neither has
  executed on a Blackwell GPU** (we have none): the kernel logic was tested on an H100 through a
  software-MMA build for sm_90 (``SAGEATTN3_EMULATED_MMA_BUILD=1``);
* otherwise, when the caller opts in with ``allow_reference=True`` or ``SAGEATTN3_ALLOW_REFERENCE=1``,
  the PyTorch reference of :mod:`sageattn3.reference`;
* otherwise a clear error naming the GPU and what to use instead.
"""

from __future__ import annotations

import os

import torch

from . import _ops
from .reference import sageattn3_reference

#: Environment switch equivalent to ``allow_reference=True``.
ALLOW_REFERENCE_ENV = "SAGEATTN3_ALLOW_REFERENCE"
#: Compute-capability majors with block-scaled FP4 MMA: sm100/sm103 (datacenter), sm110, sm120/sm121.
BLACKWELL_MAJORS = (10, 11, 12)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256

_NO_KERNEL = "this install of sageattn3 has no compiled FP4 kernel for this GPU"
_HOW_TO_OPT_IN = (
    f"pass allow_reference=True (or set {ALLOW_REFERENCE_ENV}=1) to run the slow PyTorch reference "
    "that emulates the FP4 quantization"
)


def _compiled_kernel_available(capability: tuple[int, int] | None = None) -> bool:
    """Whether this install ships FP4 kernel code that runs on ``capability`` (any arch if None)."""
    archs = _ops.compiled_archs()
    if capability is None:
        return bool(archs)
    major, minor = capability
    return f"{major}.{minor}a" in archs


def kernel_unavailable_reason(capability: tuple[int, int] | None, device_name: str,
                              built_for: str | None = None) -> str:
    """Why the FP4 kernel cannot run for a device; ``capability`` None means a CPU tensor.

    Split out of the dispatcher so tests can check the messages for GPUs this machine lacks.
    """
    if capability is None:
        return (
            f"sageattn3_blackwell runs on CUDA tensors on a Blackwell GPU, got tensors on "
            f"{device_name}; {_HOW_TO_OPT_IN}"
        )
    major, minor = capability
    if major not in BLACKWELL_MAJORS:
        return (
            f"sageattn3_blackwell needs a Blackwell GPU (sm100/sm103/sm110/sm120/sm121 class); "
            f"{device_name} is sm{major}{minor}. Use sageattention.sageattn (package "
            f"'sageattention') on this GPU, or {_HOW_TO_OPT_IN}"
        )
    if built_for is None:
        built_for = _ops.missing_build_reason() or f"it was built for {';'.join(_ops.compiled_archs())}"
    return (f"{_NO_KERNEL} ({built_for}); {device_name} (sm{major}{minor}) is supported by design: "
            f"install a sageattn3 wheel built for arch {major}.{minor}a, or {_HOW_TO_OPT_IN}")


def _to_hnd(x: torch.Tensor, tensor_layout: str) -> torch.Tensor:
    return x if tensor_layout == "HND" else x.transpose(1, 2)


def _check_inputs(q, k, v, tensor_layout: str) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} must be float16 or bfloat16, got {t.dtype}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D ({tensor_layout}), got shape {tuple(t.shape)}")
    if tensor_layout not in ("HND", "NHD"):
        raise ValueError(f"tensor_layout must be 'HND' or 'NHD', got {tensor_layout!r}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    qh, kh, vh = (_to_hnd(t, tensor_layout) for t in (q, k, v))
    if kh.shape != vh.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    b, hq, lq, d = qh.shape
    if kh.shape[0] != b or kh.shape[3] != d:
        raise ValueError(
            f"k must match q in batch and head_dim ({tensor_layout}), got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if kh.shape[1] == 0 or hq % kh.shape[1]:
        raise ValueError(f"q heads ({hq}) must be a multiple of k/v heads ({kh.shape[1]})")
    if min(b, hq, lq, kh.shape[2], d) == 0:
        raise ValueError(f"empty dimension in q {tuple(q.shape)} or k {tuple(k.shape)}")
    if d > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {d} is larger than the supported {MAX_HEAD_DIM}")


def sageattn3_blackwell(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask=None,
    is_causal: bool = False,
    per_block_mean: bool = True,
    **kw,
):
    """NVFP4 microscaling attention (SageAttention3) for Blackwell GPUs.

    Parameters
    ----------
    q : torch.Tensor
        ``[B, H_q, L_q, D]`` (HND) or ``[B, L_q, H_q, D]`` (NHD), float16 or bfloat16.
    k, v : torch.Tensor
        ``[B, H_kv, L_k, D]`` (or NHD), same dtype and device; ``H_q`` a multiple of ``H_kv``
        (GQA/MQA). Never modified (upstream subtracts the K mean in place; we do not).
    attn_mask : None
        Not supported: anything but None is a ValueError (upstream ignores it silently).
    is_causal : bool
        Top-left aligned causal mask (query ``i`` sees keys ``0..i``).
    per_block_mean : bool
        Smooth Q by the mean of each 128-token block (True, default) or of all tokens.
    sm_scale : float, optional (keyword)
        Softmax scale, default ``D ** -0.5``.
    tensor_layout : {"HND", "NHD"}, optional (keyword)
        Default "HND".
    return_lse : bool, optional (keyword)
        Also return the natural-log LSE, float32 ``[B, H_q, L_q]``.
    allow_reference : bool, optional (keyword)
        Run the PyTorch reference (:func:`sageattn3.reference.sageattn3_reference`) when no FP4
        kernel can run. Also enabled by ``SAGEATTN3_ALLOW_REFERENCE=1``. Never used when the
        kernel can run.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        Output in q's layout and dtype, and the LSE when ``return_lse``.

    Raises
    ------
    RuntimeError
        Without the opt-in, when no compiled FP4 kernel fits the device: CPU tensors, a GPU that is
        not Blackwell-class (the message names it and points to ``sageattention``), a Blackwell
        arch this install was not built for, or a head dim above the build's largest.
    ValueError, TypeError
        Bad input or unknown keyword arguments, naming the argument.

    Notes
    -----
    Archs: the FP4 kernels are compiled for sm_100a/sm_103a (software FP4 MMA) and sm_120a/sm_121a
    (hardware block-scaled FP4 MMA); none of that code has executed on a Blackwell GPU. Head dims
    up to 128 run on the kernel (zero-padded to 64 or 128); larger ones only on the reference path.
    The reference path runs on any device (CPU too).
    """
    sm_scale = kw.pop("sm_scale", None)
    tensor_layout = kw.pop("tensor_layout", "HND")
    return_lse = kw.pop("return_lse", False)
    allow_reference = kw.pop("allow_reference", False)
    dropout_p = kw.pop("dropout_p", 0.0)
    if kw:
        raise TypeError(f"sageattn3_blackwell got unsupported keyword arguments: {sorted(kw)}")
    if attn_mask is not None:
        raise ValueError("attn_mask is not supported by sageattn3_blackwell (pass None)")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (no dropout in inference attention), got {dropout_p!r}")
    if sm_scale is not None and not (isinstance(sm_scale, (int, float)) and sm_scale > 0):
        raise ValueError(f"sm_scale must be a positive number, got {sm_scale!r}")
    _check_inputs(q, k, v, tensor_layout)

    if q.is_cuda:
        capability = torch.cuda.get_device_capability(q.device)
        device_name = torch.cuda.get_device_name(q.device)
    else:
        capability, device_name = None, str(q.device)
    use_kernel = (capability is not None and capability[0] in BLACKWELL_MAJORS
                  and _compiled_kernel_available(capability) and q.shape[-1] <= max(_ops.head_dims()))
    if use_kernel:
        attention = _ops.attn_forward
    elif bool(allow_reference) or os.environ.get(ALLOW_REFERENCE_ENV, "") == "1":
        attention = sageattn3_reference
    else:
        raise RuntimeError(kernel_unavailable_reason(capability, device_name))
    out, lse = attention(
        _to_hnd(q, tensor_layout),
        _to_hnd(k, tensor_layout),
        _to_hnd(v, tensor_layout),
        is_causal=bool(is_causal),
        sm_scale=sm_scale,
        per_block_mean=bool(per_block_mean),
    )
    out = _to_hnd(out, tensor_layout).to(q.dtype)
    return (out, lse) if return_lse else out
