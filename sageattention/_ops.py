"""Typed Python front-ends for the compiled ops in ``sageattention._C`` (``torch.ops.sageattention``).

The extension is loaded lazily, on the first call that needs it, so ``import sageattention`` works
from a source tree without a build (the Triton paths need no compiled code). Each op gets:

* a wrapper here that validates its arguments (ValueError/TypeError naming the argument),
  allocates the outputs and calls the mutating op (destination-passing, STYLE.md H3);
* a fake kernel registered with :func:`torch.library.register_fake` so ``torch.compile`` can
  trace it.

Schemas: ``csrc/torch_bindings.cpp``. CUDA implementations: ``csrc/fused/*.cu``.
"""

from __future__ import annotations

import importlib
import math

import torch

__all__ = [
    "CUDAOpsUnavailableError",
    "cuda_ops_available",
    "missing_build_reason",
    "quant_per_block_int8",
    "mean_over_tokens",
    "quant_qk_per_block_int8",
    "quant_per_thread_int8",
    "quant_v_fp8_operand",
    "quant_mma_operands",
    "qk_int8_sv_f16_attn",
    "qk_int8_sv_f8_attn",
    "qk_int8_sv_f8_attn_sm90",
    "fp8_v_operand",
    "FP8_V_TOKEN_PERMUTATION",
]

LOG2E = 1.4426950408889634
_LAYOUTS = ("HND", "NHD")
_FLOAT_INPUTS = (torch.float16, torch.bfloat16)
_MAX_HEAD_DIM = 256  # the kernels' limit (csrc/fused/quant_per_block_int8.cu)
_MAX_BLOCK_SIZE = 1024

# None: not tried yet; True: loaded; False: failed, with the reason kept for error messages.
_loaded: bool | None = None
_load_failure = ""


class CUDAOpsUnavailableError(RuntimeError):
    """The compiled extension ``sageattention._C`` is missing or cannot be loaded."""


def _explain_import_error(exc: BaseException) -> str:
    cuda = torch.version.cuda or "none (CPU build)"
    if isinstance(exc, ModuleNotFoundError) and exc.name == "sageattention._C":
        return (
            "sageattention._C is not built: this is a source tree or a wheel without CUDA ops. "
            "Install the wheel built for your torch "
            f"{torch.__version__} (CUDA {cuda}), or build one with `python -m scripts.build`."
        )
    built_for = ""
    try:
        from sageattention import _build_info  # written by setup.py into built wheels

        built_for = f" The extension was built for cell {_build_info.CELL} (torch {_build_info.TORCH})."
    except ImportError:
        pass
    return (
        f"sageattention._C failed to load: {exc}.{built_for} Running torch is {torch.__version__} "
        f"(CUDA {cuda}); install the sageattention wheel built for exactly this torch and CUDA."
    )


def _load() -> bool:
    """Import ``sageattention._C`` once (which registers the ops) and register the fakes."""
    global _loaded, _load_failure
    if _loaded is None:
        try:
            importlib.import_module("sageattention._C")
        except (ImportError, OSError) as exc:
            _loaded, _load_failure = False, _explain_import_error(exc)
        else:
            _register_fakes()
            _loaded, _load_failure = True, ""
    return bool(_loaded)


def cuda_ops_available() -> bool:
    """Whether the compiled ops can be called (extension present and loadable).

    This does not check for a GPU: callers check ``torch.cuda.is_available()`` / the tensors'
    device themselves.
    """
    return _load()


def missing_build_reason() -> str:
    """Why the compiled ops are unavailable, as one sentence naming the fix; ``""`` if they are."""
    return "" if _load() else _load_failure


def _require_ops() -> None:
    if not _load():
        raise CUDAOpsUnavailableError(_load_failure)


def _register_fakes() -> None:
    # The ops only write into their destination arguments, so their fake kernels have nothing
    # to compute: they exist so FakeTensor/torch.compile can trace through the ops.
    @torch.library.register_fake("sageattention::quant_per_block_int8")
    def _quant_per_block_int8_fake(x, x_int8, scale, mean, pre_scale, block_size, tensor_layout):
        return None

    @torch.library.register_fake("sageattention::mean_over_tokens")
    def _mean_over_tokens_fake(x, mean, tensor_layout):
        return None

    @torch.library.register_fake("sageattention::quant_per_thread_int8")
    def _quant_per_thread_int8_fake(x, x_int8, scale, mean, pre_scale, block, warp, groups_per_warp,
                                    tensor_layout):
        return None

    @torch.library.register_fake("sageattention::quant_v_fp8_operand")
    def _quant_v_fp8_operand_fake(v, v_operand, v_scale, v_mean, scale_max, tensor_layout):
        return None

    @torch.library.register_fake("sageattention::quant_mma_operands")
    def _quant_mma_operands_fake(q, k, v, q_int8, q_scale, k_int8, k_scale, k_mean, v_operand, v_scale, v_mean,
                                 q_pre_scale, q_block, q_warp, q_groups_per_warp, k_block, k_warp, k_groups_per_warp,
                                 v_scale_max, tensor_layout):
        return None

    @torch.library.register_fake("sageattention::qk_int8_sv_f16_attn")
    def _qk_int8_sv_f16_attn_fake(q, k, v, o, q_scale, k_scale, lse, tensor_layout, is_causal,
                                  qk_quant_gran, qk_scale, pv_accum_dtype):
        return None

    @torch.library.register_fake("sageattention::qk_int8_sv_f8_attn")
    def _qk_int8_sv_f8_attn_fake(q, k, v, v_scale, o, q_scale, k_scale, lse, tensor_layout, is_causal,
                                 qk_quant_gran, qk_scale, pv_accum_dtype):
        return None

    @torch.library.register_fake("sageattention::qk_int8_sv_f8_attn_sm90")
    def _qk_int8_sv_f8_attn_sm90_fake(q, k, v, v_scale, o, q_scale, k_scale, lse, tensor_layout, is_causal,
                                      qk_quant_gran, qk_scale, pv_accum_dtype):
        return None


# ---- argument checks (Python side, before anything reaches the dispatcher) -------------------


def _check_layout(tensor_layout: str) -> None:
    if tensor_layout not in _LAYOUTS:
        raise ValueError(f"tensor_layout must be 'HND' or 'NHD', got {tensor_layout!r}")


def _check_input(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cuda":
        hint = "" if torch.cuda.is_available() else " (torch.cuda.is_available() is False: no usable GPU)"
        raise ValueError(
            f"{name} must be a CUDA tensor for the compiled sageattention ops, got device "
            f"{x.device}{hint}"
        )
    if x.dtype not in _FLOAT_INPUTS:
        raise TypeError(f"{name} must be float16 or bfloat16, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-d ([B, H, L, D] or [B, L, H, D]), got shape {tuple(x.shape)}")
    if not 1 <= x.shape[-1] <= _MAX_HEAD_DIM:
        raise ValueError(f"{name} head dim must be in [1, {_MAX_HEAD_DIM}], got {x.shape[-1]}")
    if x.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dimension, got strides {x.stride()}")


def _bhld(x: torch.Tensor, tensor_layout: str) -> tuple[int, int, int, int]:
    if tensor_layout == "HND":
        b, h, n, d = x.shape
    else:
        b, n, h, d = x.shape
    return b, h, n, d


def _check_mean(mean: torch.Tensor, x: torch.Tensor, tensor_layout: str, name: str) -> None:
    b, h, _, d = _bhld(x, tensor_layout)
    if not isinstance(mean, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mean).__name__}")
    if tuple(mean.shape) != (b, h, 1, d):
        raise ValueError(f"{name} must have shape {(b, h, 1, d)}, got {tuple(mean.shape)}")
    if mean.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {mean.dtype}")
    if mean.device != x.device:
        raise ValueError(f"{name} must be on {x.device}, got {mean.device}")
    if mean.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dimension, got strides {mean.stride()}")


# ---- wrappers --------------------------------------------------------------------------------


def quant_per_block_int8(
    x: torch.Tensor,
    block_size: int,
    *,
    mean: torch.Tensor | None = None,
    pre_scale: float = 1.0,
    tensor_layout: str = "HND",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric INT8 quantization of ``(x - mean) * pre_scale`` per block of tokens (CUDA).

    Parameters
    ----------
    x : torch.Tensor
        ``[B, H, L, D]`` ("HND") or ``[B, L, H, D]`` ("NHD"), float16/bfloat16, on a CUDA device,
        any strides with a contiguous last dim, ``D <= 256``. Any arch the wheel was built for
        (sm_80+).
    block_size : int
        Tokens per quantization group (128 for Q, 64 for K in the per-block kernels).
    mean : torch.Tensor, optional
        ``[B, H, 1, D]`` float32 per-channel mean subtracted first (K smoothing).
    pre_scale : float
        Factor applied before the absmax (``sm_scale * log2(e)`` for Q).
    tensor_layout : {"HND", "NHD"}

    Returns
    -------
    x_int8 : torch.Tensor
        int8, same shape and layout as ``x`` (contiguous).
    scale : torch.Tensor
        float32 ``[B, H, ceil(L / block_size)]``: ``absmax / 127`` per block, 0 for all-zero blocks.
    """
    _check_layout(tensor_layout)
    _check_input(x, "x")
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    if not 1 <= block_size <= _MAX_BLOCK_SIZE:
        raise ValueError(f"block_size must be in [1, {_MAX_BLOCK_SIZE}], got {block_size}")
    if not math.isfinite(float(pre_scale)):
        raise ValueError(f"pre_scale must be finite, got {pre_scale}")
    if mean is not None:
        _check_mean(mean, x, tensor_layout, "mean")
    _require_ops()
    b, h, n, _ = _bhld(x, tensor_layout)
    x_int8 = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    scale = torch.empty((b, h, math.ceil(n / block_size)), dtype=torch.float32, device=x.device)
    torch.ops.sageattention.quant_per_block_int8(
        x, x_int8, scale, mean, float(pre_scale), block_size, tensor_layout
    )
    return x_int8, scale


def mean_over_tokens(x: torch.Tensor, *, tensor_layout: str = "HND") -> torch.Tensor:
    """Per-(batch, head, channel) mean over all tokens, accumulated in float32 (CUDA).

    Parameters
    ----------
    x : torch.Tensor
        ``[B, H, L, D]`` ("HND") or ``[B, L, H, D]`` ("NHD"), float16/bfloat16, CUDA, ``L >= 1``.

    Returns
    -------
    torch.Tensor
        float32 ``[B, H, 1, D]`` whatever the layout (the reference's ``k_mean`` shape).
    """
    _check_layout(tensor_layout)
    _check_input(x, "x")
    b, h, n, d = _bhld(x, tensor_layout)
    if n == 0:
        raise ValueError("x has no tokens (L == 0): the mean over tokens is undefined")
    _require_ops()
    mean = torch.empty((b, h, 1, d), dtype=torch.float32, device=x.device)
    torch.ops.sageattention.mean_over_tokens(x, mean, tensor_layout)
    return mean


def quant_qk_per_block_int8(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    tensor_layout: str = "HND",
    sm_scale: float | None = None,
    smooth_k: bool = True,
    blkq: int = 128,
    blkk: int = 64,
    k_mean: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-block INT8 Q and smoothed K, the CUDA twin of ``quant_per_block_int8_ref``.

    Q gets ``sm_scale * log2(e)`` folded in; K has its per-channel token mean subtracted
    (``smooth_k``), computed by :func:`mean_over_tokens` unless ``k_mean`` is given.

    Parameters
    ----------
    q, k : torch.Tensor
        Layout ``tensor_layout``; float16/bfloat16 CUDA tensors, ``D <= 256``; GQA allowed
        (``H_q`` may differ from ``H_kv``).
    sm_scale : float, optional
        Softmax scale; defaults to ``D ** -0.5``.
    k_mean : torch.Tensor, optional
        ``[B, H_kv, 1, D]`` float32 mean to subtract instead of computing it.

    Returns
    -------
    (q_int8, q_scale, k_int8, k_scale, k_mean)
        int8 tensors keep the input layout; scales are float32 ``[B, H, ceil(L / blk)]``;
        ``k_mean`` is float32 ``[B, H_kv, 1, D]`` (zeros when ``smooth_k`` is False).
    """
    _check_layout(tensor_layout)
    _check_input(q, "q")
    _check_input(k, "k")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got {q.device} and {k.device}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head dim, got {q.shape[-1]} and {k.shape[-1]}")
    if sm_scale is None:
        sm_scale = q.shape[-1] ** -0.5
    if k_mean is not None and not smooth_k:
        raise ValueError("k_mean was given but smooth_k is False: pass one or the other")
    if smooth_k:
        if k_mean is None:
            k_mean = mean_over_tokens(k, tensor_layout=tensor_layout)
        else:
            _check_mean(k_mean, k, tensor_layout, "k_mean")
        used_mean = k_mean
    else:
        b, h, _, d = _bhld(k, tensor_layout)
        k_mean = torch.zeros((b, h, 1, d), dtype=torch.float32, device=k.device)
        used_mean = None
    q_int8, q_scale = quant_per_block_int8(
        q, blkq, pre_scale=sm_scale * LOG2E, tensor_layout=tensor_layout
    )
    k_int8, k_scale = quant_per_block_int8(k, blkk, mean=used_mean, tensor_layout=tensor_layout)
    return q_int8, q_scale, k_int8, k_scale, k_mean


def _check_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")


def _check_slab_grouping(*groupings: tuple) -> None:
    """The INT8 grouping of the per-thread/per-warp quantizers, for each ``(block, warp,
    groups_per_warp, prefix)``: ``block``-row tiles of ``warp``-row slabs with ``groups_per_warp``
    scales each; argument names in messages carry ``prefix`` ("q_"). Every type is checked first."""
    for block, warp, groups_per_warp, prefix in groupings:
        for value, name in ((block, "block"), (warp, "warp"), (groups_per_warp, "groups_per_warp")):
            _check_int(value, prefix + name)
    for block, warp, groups_per_warp, prefix in groupings:
        if not 8 <= warp <= _MAX_BLOCK_SIZE or warp % 8:
            raise ValueError(f"{prefix}warp must be a multiple of 8 in [8, {_MAX_BLOCK_SIZE}], got {warp}")
        if block < warp or block % warp:
            raise ValueError(f"{prefix}block must be a multiple of {prefix}warp ({warp}), got {block}")
        if groups_per_warp not in (1, 2, 4, 8):
            raise ValueError(f"{prefix}groups_per_warp must be 1, 2, 4 or 8, got {groups_per_warp}")


def _head_dim_out(x: torch.Tensor, head_dim_out: int | None) -> int:
    d = x.shape[-1]
    if head_dim_out is None:
        return d
    _check_int(head_dim_out, "head_dim_out")
    if not d <= head_dim_out <= _MAX_HEAD_DIM:
        raise ValueError(f"head_dim_out must be in [{d} (the input head dim), {_MAX_HEAD_DIM}], got {head_dim_out}")
    return head_dim_out


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
    """Per-thread / per-warp INT8 in the mma.sync fragment groups (CUDA twin of
    ``triton.quant_per_thread_int8.quant_per_thread_int8``, same arguments and results).

    Parameters
    ----------
    x : torch.Tensor
        ``[B, H, L, D]`` ("HND") or ``[B, L, H, D]`` ("NHD"), float16/bfloat16, CUDA, any strides
        with a contiguous last dim, ``D <= 256``.
    block, warp : int
        Tile rows (128 for Q, 64 for K) and slab rows (16 for Q, 64 for K); ``warp % 8 == 0``,
        ``block % warp == 0``.
    groups_per_warp : {8, 4, 2, 1}
        Row ``r`` of a slab belongs to group ``(r mod 8) // (8 / groups_per_warp)``: 8 per-thread Q,
        4 per-thread K, 1 per-warp.
    pre_scale : float
        Factor applied after the mean subtraction (``sm_scale * log2(e)`` for Q).
    mean : torch.Tensor, optional
        ``[B, H, 1, D]`` float32 per-channel mean subtracted first (K smoothing).
    head_dim_out : int, optional
        Last dim of the output (>= D, zeros past D); default D.

    Returns
    -------
    x_int8 : torch.Tensor
        int8, x's layout (contiguous), last dim ``head_dim_out``.
    scale : torch.Tensor
        float32 ``[B, H, ceil(L / block) * (block / warp) * groups_per_warp]``; 0 for all-zero and
        padding groups.
    """
    _check_layout(tensor_layout)
    _check_input(x, "x")
    _check_slab_grouping((block, warp, groups_per_warp, ""))
    if not math.isfinite(float(pre_scale)):
        raise ValueError(f"pre_scale must be finite, got {pre_scale}")
    if mean is not None:
        _check_mean(mean, x, tensor_layout, "mean")
    d_out = _head_dim_out(x, head_dim_out)
    _require_ops()
    b, h, n, _ = _bhld(x, tensor_layout)
    x_int8 = torch.empty(tuple(x.shape[:-1]) + (d_out,), dtype=torch.int8, device=x.device)
    slabs = math.ceil(n / block) * (block // warp)
    scale = torch.empty((b, h, slabs * groups_per_warp), dtype=torch.float32, device=x.device)
    torch.ops.sageattention.quant_per_thread_int8(
        x, x_int8, scale, mean, float(pre_scale), block, warp, groups_per_warp, tensor_layout
    )
    return x_int8, scale


_E4M3_MAX = 448.0


def quant_v_fp8_operand(
    v: torch.Tensor,
    *,
    scale_max: float = _E4M3_MAX,
    smooth_v: bool = False,
    tensor_layout: str = "HND",
    head_dim_out: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """V -> the FP8 operand of :func:`qk_int8_sv_f8_attn` in one call (CUDA): the bytes of
    ``triton.quant_per_channel_fp8.quant_per_channel_fp8`` followed by :func:`fp8_v_operand`.

    Parameters
    ----------
    v : torch.Tensor
        ``[B, H, L, D]`` ("HND") or ``[B, L, H, D]`` ("NHD"), float16/bfloat16, CUDA, any strides
        with a contiguous last dim, ``D <= 256``.
    scale_max : float
        e4m3 value the channel absmax maps to, in (0, 448]: 448 or 2.25 (SageAttention2++).
    smooth_v : bool
        Subtract the per-channel mean over tokens first (returned; the caller adds it back).
    head_dim_out : int, optional
        Channels of the operand (>= D; zero bytes and scale 0 past D); default D.

    Returns
    -------
    v_operand : torch.Tensor
        float8_e4m3fn ``[B, H, head_dim_out, ceil(L / 64) * 64]``, tokens contiguous, zero past L,
        permuted in 16-token groups by :data:`FP8_V_TOKEN_PERMUTATION`.
    v_scale : torch.Tensor
        float32 ``[B, H, head_dim_out]``.
    v_mean : torch.Tensor or None
        float32 ``[B, H, 1, head_dim_out]`` with ``smooth_v``, else None.
    """
    _check_layout(tensor_layout)
    _check_input(v, "v")
    if not isinstance(smooth_v, bool):
        raise TypeError(f"smooth_v must be a bool, got {type(smooth_v).__name__}")
    if isinstance(scale_max, bool) or not isinstance(scale_max, (int, float)):
        raise TypeError(f"scale_max must be a float, got {type(scale_max).__name__}")
    if not 0.0 < float(scale_max) <= _E4M3_MAX:
        raise ValueError(f"scale_max must be in (0, {_E4M3_MAX}], got {scale_max}")
    d_out = _head_dim_out(v, head_dim_out)
    _require_ops()
    b, h, n, _ = _bhld(v, tensor_layout)
    n_pad = -(-n // _ATTN_BLOCK_K) * _ATTN_BLOCK_K
    v_operand = torch.empty((b, h, d_out, n_pad), dtype=torch.float8_e4m3fn, device=v.device)
    v_scale = torch.empty((b, h, d_out), dtype=torch.float32, device=v.device)
    v_mean = torch.empty((b, h, 1, d_out), dtype=torch.float32, device=v.device) if smooth_v else None
    torch.ops.sageattention.quant_v_fp8_operand(v, v_operand, v_scale, v_mean, float(scale_max), tensor_layout)
    return v_operand, v_scale, v_mean


def quant_mma_operands(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor | None = None,
    *,
    pre_scale: float,
    q_groups_per_warp: int,
    k_groups_per_warp: int,
    smooth_k: bool = True,
    scale_max: float = _E4M3_MAX,
    smooth_v: bool = False,
    tensor_layout: str = "HND",
    head_dim_out: int | None = None,
    q_block: int = 128,
    q_warp: int = 16,
    k_block: int = 64,
    k_warp: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None,
           torch.Tensor | None, torch.Tensor | None]:
    """Every quantized operand of the mma.sync attention ops in one call (CUDA, three launches):
    the outputs of :func:`mean_over_tokens` (K), :func:`quant_per_thread_int8` (Q, then K minus its
    mean) and :func:`quant_v_fp8_operand` (V), bit for bit.

    Parameters
    ----------
    q, k : torch.Tensor
        ``[B, H, L, D]`` ("HND") or ``[B, L, H, D]`` ("NHD"), one dtype (float16/bfloat16) and
        CUDA device, any strides with a contiguous last dim, the same ``D <= 256``; ``H_q`` and
        ``L_q`` may differ from K's.
    v : torch.Tensor, optional
        k's shape, dtype and device: quantized to the FP8 operand when given (FP8 P·V).
    pre_scale : float
        Factor applied to Q (``sm_scale * log2(e)``).
    q_groups_per_warp, k_groups_per_warp : {8, 4, 2, 1}
        Groups per slab (8 / 4 per-thread, 1 per-warp); slabs and tiles ``q_warp`` / ``q_block``
        and ``k_warp`` / ``k_block`` rows as in :func:`quant_per_thread_int8`.
    smooth_k : bool
        Subtract K's per-channel mean over tokens (returned as ``k_mean``); K needs ``L >= 1``.
    scale_max, smooth_v
        As :func:`quant_v_fp8_operand` (only with ``v``).
    head_dim_out : int, optional
        Last dim of the INT8 outputs and channels of the FP8 operand (>= D, zero padded).

    Returns
    -------
    (q_int8, q_scale, k_int8, k_scale, k_mean, v_operand, v_scale, v_mean)
        As the single ops return them; ``k_mean`` is None without ``smooth_k``, the V outputs
        None without ``v`` (``v_mean`` also without ``smooth_v``).
    """
    _check_layout(tensor_layout)
    _check_input(q, "q")
    _check_input(k, "k")
    tensors = (("k", k),) if v is None else (("k", k), ("v", v))
    if v is not None:
        _check_input(v, "v")
    for name, t in tensors:
        if t.device != q.device or t.dtype != q.dtype:
            raise ValueError(
                f"{name} must have q's device and dtype ({q.device}, {q.dtype}), got {t.device}, {t.dtype}"
            )
    if k.shape[-1] != q.shape[-1] or (v is not None and v.shape != k.shape):
        raise ValueError(f"q and k must share the head dim and v must have k's shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {None if v is None else tuple(v.shape)}")
    _check_slab_grouping((q_block, q_warp, q_groups_per_warp, "q_"), (k_block, k_warp, k_groups_per_warp, "k_"))
    if not math.isfinite(float(pre_scale)):
        raise ValueError(f"pre_scale must be finite, got {pre_scale}")
    for value, name in ((smooth_k, "smooth_k"), (smooth_v, "smooth_v")):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    if isinstance(scale_max, bool) or not isinstance(scale_max, (int, float)):
        raise TypeError(f"scale_max must be a float, got {type(scale_max).__name__}")
    if not 0.0 < float(scale_max) <= _E4M3_MAX:
        raise ValueError(f"scale_max must be in (0, {_E4M3_MAX}], got {scale_max}")
    if smooth_v and v is None:
        raise ValueError("smooth_v needs v")
    if smooth_k and _bhld(k, tensor_layout)[2] == 0:
        raise ValueError("k has no tokens (L == 0): the mean over tokens is undefined")
    d_out = _head_dim_out(q, head_dim_out)
    _require_ops()
    return _quant_mma_operands(q, k, v, pre_scale, q_groups_per_warp, k_groups_per_warp, smooth_k, float(scale_max),
                               smooth_v, tensor_layout, d_out, q_block, q_warp, k_block, k_warp)


def _quant_mma_operands(q, k, v, pre_scale, q_groups_per_warp, k_groups_per_warp, smooth_k, scale_max, smooth_v,
                        tensor_layout, d_out, q_block=128, q_warp=16, k_block=64, k_warp=64):
    """:func:`quant_mma_operands` without the Python checks, for callers that validated the
    arguments (``api._cuda_quantize``): allocations and one op call. The op still checks shapes,
    dtypes and devices in C++."""
    device = q.device
    if tensor_layout == "HND":
        b, hq, nq, d = q.shape
        _, hk, nk, _ = k.shape
    else:
        b, nq, hq, d = q.shape
        _, nk, hk, _ = k.shape
    q_int8 = torch.empty(q.shape[:-1] + (d_out,), dtype=torch.int8, device=device)
    q_scale = torch.empty((b, hq, -(-nq // q_block) * (q_block // q_warp) * q_groups_per_warp), dtype=torch.float32,
                          device=device)
    k_int8 = torch.empty(k.shape[:-1] + (d_out,), dtype=torch.int8, device=device)
    k_scale = torch.empty((b, hk, -(-nk // k_block) * (k_block // k_warp) * k_groups_per_warp), dtype=torch.float32,
                          device=device)
    k_mean = torch.empty((b, hk, 1, d), dtype=torch.float32, device=device) if smooth_k else None
    v_operand = v_scale = v_mean = None
    if v is not None:
        v_operand = torch.empty((b, hk, d_out, -(-nk // _ATTN_BLOCK_K) * _ATTN_BLOCK_K), dtype=torch.float8_e4m3fn,
                                device=device)
        v_scale = torch.empty((b, hk, d_out), dtype=torch.float32, device=device)
        if smooth_v:
            v_mean = torch.empty((b, hk, 1, d_out), dtype=torch.float32, device=device)
    torch.ops.sageattention.quant_mma_operands(
        q, k, v, q_int8, q_scale, k_int8, k_scale, k_mean, v_operand, v_scale, v_mean, float(pre_scale), q_block,
        q_warp, q_groups_per_warp, k_block, k_warp, k_groups_per_warp, scale_max, tensor_layout,
    )
    return q_int8, q_scale, k_int8, k_scale, k_mean, v_operand, v_scale, v_mean


# ---- attention (csrc/qattn/) -------------------------------------------------------------------

#: Position p of each 16-token group of the FP8 V operand holds token FP8_V_TOKEN_PERMUTATION[p]:
#: the k32 FP8 MMA's A operand wants 4 consecutive K indices per register while a thread's P
#: fragment holds tokens {2t, 2t+1, 2t+8, 2t+9} (csrc/qattn/qk_int8_attn.cuh).
FP8_V_TOKEN_PERMUTATION = (0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15)
_ATTN_BLOCK_Q = 128  # query rows per CTA (8 warps of 16): the scale arrays' tiles
_ATTN_BLOCK_K = 64


def fp8_v_operand(v_fp8: torch.Tensor, tensor_layout: str = "HND") -> torch.Tensor:
    """e4m3 V (``[B, H, L, D]`` / ``[B, L, H, D]``) -> the ``[B, H, D, L_pad]`` operand of
    ``qk_int8_sv_f8_attn``: tokens contiguous, zero-padded to a multiple of 64, permuted inside each
    16-token group by :data:`FP8_V_TOKEN_PERMUTATION`. One copy of V (1 byte per element)."""
    _check_layout(tensor_layout)
    if v_fp8.dtype != torch.float8_e4m3fn or v_fp8.dim() != 4:
        raise TypeError(f"v_fp8 must be a 4-d float8_e4m3fn tensor, got {v_fp8.dtype} with shape {tuple(v_fp8.shape)}")
    vh = v_fp8 if tensor_layout == "HND" else v_fp8.transpose(1, 2)
    b, h, n, d = vh.shape
    n_pad = -(-n // _ATTN_BLOCK_K) * _ATTN_BLOCK_K
    perm = torch.tensor(FP8_V_TOKEN_PERMUTATION, device=v_fp8.device)
    index = (torch.arange(n_pad, device=v_fp8.device) // 16) * 16 + perm.repeat(n_pad // 16)
    src = torch.zeros((b, h, n_pad, d), dtype=torch.uint8, device=v_fp8.device)
    src[:, :, :n] = vh.view(torch.uint8)
    out = torch.empty((b, h, d, n_pad), dtype=torch.uint8, device=v_fp8.device)
    out.copy_(src.index_select(2, index).transpose(2, 3))
    return out.view(torch.float8_e4m3fn)


def _attn_outputs(q_int8, tensor_layout, output_dtype, return_lse):
    if output_dtype not in _FLOAT_INPUTS:
        raise TypeError(f"output_dtype must be torch.float16 or torch.bfloat16, got {output_dtype}")
    b, h, n, _ = _bhld(q_int8, tensor_layout)
    o = torch.empty(q_int8.shape, dtype=output_dtype, device=q_int8.device)
    lse = torch.empty((b, h, n), dtype=torch.float32, device=q_int8.device) if return_lse else None
    return o, lse


def qk_int8_sv_f16_attn(
    q_int8: torch.Tensor, k_int8: torch.Tensor, v: torch.Tensor, q_scale: torch.Tensor, k_scale: torch.Tensor,
    *, tensor_layout: str = "HND", is_causal: bool = False, qk_quant_gran: str = "per_thread",
    qk_scale: float = 1.0, pv_accum_dtype: str = "fp32", output_dtype: torch.dtype = torch.float16,
    return_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """INT8 Q·Kᵀ + FP16 P·V attention on quantized inputs (contract: csrc/torch_bindings.cpp).

    Returns ``(o, lse2)``: ``o`` in q's layout and ``output_dtype``; ``lse2`` the base-2 LSE of the
    log2-domain scores, float32 ``[B, H_q, L_q]`` (None unless ``return_lse``).
    """
    _check_layout(tensor_layout)
    _require_ops()
    o, lse = _attn_outputs(q_int8, tensor_layout, output_dtype, return_lse)
    torch.ops.sageattention.qk_int8_sv_f16_attn(
        q_int8, k_int8, v, o, q_scale, k_scale, lse, tensor_layout, is_causal, qk_quant_gran,
        float(qk_scale), pv_accum_dtype,
    )
    return o, lse


def qk_int8_sv_f8_attn(
    q_int8: torch.Tensor, k_int8: torch.Tensor, v_operand: torch.Tensor, v_scale: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, *, tensor_layout: str = "HND", is_causal: bool = False,
    qk_quant_gran: str = "per_thread", qk_scale: float = 1.0, pv_accum_dtype: str = "fp32+fp32",
    output_dtype: torch.dtype = torch.float16, return_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """INT8 Q·Kᵀ + FP8 P·V attention; ``v_operand`` from :func:`fp8_v_operand`, ``v_scale``
    ``[B, H_kv, D]``. Returns ``(o, lse2)`` as :func:`qk_int8_sv_f16_attn`."""
    return _fp8_attn("qk_int8_sv_f8_attn", q_int8, k_int8, v_operand, v_scale, q_scale,
                     k_scale, tensor_layout, is_causal, qk_quant_gran, qk_scale, pv_accum_dtype, output_dtype,
                     return_lse)


def _fp8_attn(op_name, q_int8, k_int8, v_operand, v_scale, q_scale, k_scale, tensor_layout, is_causal, qk_quant_gran,
              qk_scale, pv_accum_dtype, output_dtype, return_lse):
    """Allocate ``o``/``lse`` and call the FP8 P·V op ``op_name`` (one schema: mma.sync or sm90)."""
    _check_layout(tensor_layout)
    _require_ops()
    o, lse = _attn_outputs(q_int8, tensor_layout, output_dtype, return_lse)
    op = getattr(torch.ops.sageattention, op_name)
    op(q_int8, k_int8, v_operand, v_scale, o, q_scale, k_scale, lse, tensor_layout, is_causal, qk_quant_gran,
       float(qk_scale), pv_accum_dtype)
    return o, lse


def qk_int8_sv_f8_attn_sm90(
    q_int8: torch.Tensor, k_int8: torch.Tensor, v_operand: torch.Tensor, v_scale: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, *, tensor_layout: str = "HND", is_causal: bool = False,
    qk_quant_gran: str = "per_thread", qk_scale: float = 1.0, pv_accum_dtype: str = "fp32+fp32",
    output_dtype: torch.dtype = torch.float16, return_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Hopper (sm_90a, wgmma) kernel of :func:`qk_int8_sv_f8_attn`: the same operands and
    results; ``pv_accum_dtype`` must be ``"fp32+fp32"``; KV blocks of 128 keys (the emulation
    that matches it: ``attn_qk_int8_mma_emulated(..., block_k=128)``). ``sageattn``'s kernel on sm90."""
    return _fp8_attn("qk_int8_sv_f8_attn_sm90", q_int8, k_int8, v_operand, v_scale, q_scale,
                     k_scale, tensor_layout, is_causal, qk_quant_gran, qk_scale, pv_accum_dtype, output_dtype,
                     return_lse)
