"""Front end of the compiled ops in ``sageattn3._C`` (``torch.ops.sageattn3``).

The extension is loaded lazily, so ``import sageattn3`` works without a build (the reference path
needs no compiled code). Each op gets a wrapper that allocates its outputs and calls the mutating
op (destination-passing), and a fake kernel for ``torch.compile``. Schemas:
``csrc/torch_bindings.cpp``; CUDA code: ``csrc/quant_nvfp4.cu``, ``csrc/attn_fwd.cu``.

:func:`attn_forward` is the whole kernel path on ``[B, H, L, D]`` tensors: the smoothing and ΔS
of :mod:`sageattn3.reference` in float32 PyTorch, NVFP4 quantization of Q, K and Vᵀ on the GPU,
the attention kernel, and the K-mean term of the LSE. It runs whatever this build compiled, with
no arch check (sageattn3.api dispatches); tests call it directly on a ``SAGEATTN3_EMULATED_MMA_BUILD``
build for an H100.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from .reference import Q_BLOCK, _block_means

__all__ = ["kernel_available", "missing_build_reason", "build_info", "compiled_archs", "head_dims",
           "quant_nvfp4", "attn_forward"]

ROWS_PER_CTA = 64   # csrc/attn_fwd.cu kRowsPerCta: Lq is padded to a multiple of it
KEYS_PER_TILE = 128  # csrc/attn_fwd.cu kKeysPerTile: Lk is padded to a multiple of it

_loaded: bool | None = None
_load_failure = ""


def _load() -> bool:
    global _loaded, _load_failure
    if _loaded is None:
        try:
            importlib.import_module("sageattn3._C")
        except (ImportError, OSError) as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == "sageattn3._C":
                _load_failure = ("sageattn3._C is not built: this is a source tree or a wheel without the FP4 "
                                 "kernels; build one with `python -m scripts.build --package sageattn3`")
            else:
                _load_failure = (f"sageattn3._C failed to load: {exc}; install the sageattn3 wheel built for "
                                 f"torch {torch.__version__} (CUDA {torch.version.cuda})")
            _loaded = False
        else:
            _register_fakes()
            _loaded = True
    return bool(_loaded)


def kernel_available() -> bool:
    """Whether ``sageattn3._C`` (the FP4 kernels) is importable in this install."""
    return _load()


def missing_build_reason() -> str:
    _load()
    return _load_failure


def build_info():
    """The ``sageattn3._build_info`` module of a built wheel, or None in a source tree."""
    try:
        return importlib.import_module("sageattn3._build_info")
    except ImportError:
        return None


def compiled_archs() -> list[str]:
    """Arch strings (``"12.0a"``) this build holds code for; empty without a build."""
    info = build_info()
    if info is None or not kernel_available():
        return []
    return [a.split("+")[0] for a in info.TORCH_CUDA_ARCH_LIST.replace(",", ";").split(";") if a.strip()]


def head_dims() -> tuple[int, ...]:
    info = build_info()
    return tuple(getattr(info, "HEAD_DIMS", (64, 128))) if info is not None else (64, 128)


def _register_fakes() -> None:
    @torch.library.register_fake("sageattn3::quant_nvfp4")
    def _(x, codes, scales):
        return None

    @torch.library.register_fake("sageattn3::attn_fwd")
    def _(q_codes, q_scales, k_codes, k_scales, v_codes, v_scales, delta_s, out, lse, kv_len, sm_scale,
          is_causal, per_block_mean):
        return None


def quant_nvfp4(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4 codes (uint8 ``[..., N/2]``) and E4M3 scale bits (uint8 ``[..., N/16]``) of ``x`` along its last dim."""
    if not _load():
        raise RuntimeError(_load_failure)
    if x.shape[-1] % 16:
        raise ValueError(f"the last dim must be a multiple of 16, got {tuple(x.shape)}")
    x = x.to(torch.float32).contiguous()
    codes = torch.empty(*x.shape[:-1], x.shape[-1] // 2, dtype=torch.uint8, device=x.device)
    scales = torch.empty(*x.shape[:-1], x.shape[-1] // 16, dtype=torch.uint8, device=x.device)
    torch.ops.sageattn3.quant_nvfp4(x, codes, scales)
    return codes, scales


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def attn_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, is_causal: bool = False,
                 sm_scale: float | None = None, per_block_mean: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The FP4 kernel on HND tensors (CUDA); returns ``(out float32 [B,Hq,Lq,D], lse float32 [B,Hq,Lq])``.

    Same contract as :func:`sageattn3.reference.sageattn3_reference` (which it models). Inputs
    are read, never written.
    """
    if not _load():
        raise RuntimeError(_load_failure)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    groups = hq // hkv
    fitting = [dim for dim in head_dims() if dim >= d]
    if not fitting:
        raise ValueError(f"head_dim {d} is larger than this build's head dims {head_dims()}")
    d_pad = min(fitting)
    if sm_scale is None:
        sm_scale = d ** -0.5
    lq_pad, lk_pad = _round_up(lq, ROWS_PER_CTA), _round_up(lk, KEYS_PER_TILE)

    qf, kf, vf = (t.to(torch.float32) for t in (q, k, v))  # new tensors: the inputs stay untouched
    k_mean = kf.mean(dim=2, keepdim=True)
    k_s = kf - k_mean
    block = Q_BLOCK if per_block_mean else lq
    q_means = _block_means(qf, block)                                   # [B, Hq, nQ, D]
    nq = q_means.shape[2]
    q_bar = q_means.repeat_interleave(block, dim=2)[:, :, :lq]
    # ΔS = q̄ · K_sᵀ per query block; q head h reads kv head h // groups.
    delta_s = torch.matmul(q_means.reshape(b, hkv, groups * nq, d), k_s.transpose(-1, -2))
    delta_s = F.pad(delta_s.reshape(b, hq, nq, lk), (0, lk_pad - lk)).contiguous()

    q_codes, q_scales = quant_nvfp4(F.pad(qf - q_bar, (0, d_pad - d, 0, lq_pad - lq)))
    k_codes, k_scales = quant_nvfp4(F.pad(k_s, (0, d_pad - d, 0, lk_pad - lk)))
    v_codes, v_scales = quant_nvfp4(F.pad(vf.transpose(-1, -2), (0, lk_pad - lk, 0, d_pad - d)))

    out = torch.empty(b, hq, lq_pad, d_pad, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, hq, lq_pad, dtype=torch.float32, device=q.device)
    torch.ops.sageattn3.attn_fwd(q_codes, q_scales, k_codes, k_scales, v_codes, v_scales, delta_s, out, lse,
                                 lk, float(sm_scale), bool(is_causal), bool(per_block_mean))
    k_mean_q = k_mean.repeat_interleave(groups, dim=1)
    lse = lse[:, :, :lq] + sm_scale * torch.matmul(qf, k_mean_q.transpose(-1, -2))[..., 0]
    return out[:, :, :lq, :d], lse
