"""Which attention variant runs where: the one support table, read by ``api.py`` and the tests.

``VARIANTS`` lists every public attention entry point with the GPU archs, dtypes and head dims it
supports and what it needs from this build (a Triton install, or a CUDA op in
``sageattention._C``). ``SAGEATTN_PREFERENCE`` orders, per compute capability, the variants
``sageattn`` may pick; :func:`select_kernel` takes the first one this build has. The choice is
deterministic and silent (no printing, no fallback at call time): an arch with no usable variant
raises a ``RuntimeError`` that names what is missing.

Facts behind the table (research notes §1.4, §5.1):

* INT8 tensor-core MMA, which every variant's Q·Kᵀ needs, exists from sm75 (Turing) on.
* Triton's ``fp8e4nv`` (``torch.float8_e4m3fn``) dot operands are enabled only for
  ``capability >= 89`` — verified in Triton 3.8's ``backends/nvidia/compiler.py``
  (``supported_fp8_dtypes`` gains ``"fp8e4nv"`` under ``if capability >= 89``).
* sm75 with Triton >= 3.3: the upstream Triton kernel was reported to stop working (tested on an
  RTX 2080 Ti with Triton 3.0-3.3, https://github.com/thu-ml/SageAttention/issues/197).
  *Not verified here* (no Turing GPU); we follow the report and raise.
* Blackwell (sm100/sm103/sm110/sm120/sm121) code generation arrived in Triton 3.3 (the release
  paired with PyTorch 2.7, the first with CUDA 12.8 / Blackwell wheels). *Not verified here.*
* Upstream ``sageattn`` raises on sm75, sm87 and sm100; we cover every arch from sm75 to sm121.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Every compute capability from Turing to consumer Blackwell that CUDA 12.x/13.x targets
# (10.1 was renamed 11.0 in CUDA 13; both appear so either driver report maps).
KNOWN_CAPABILITIES: tuple[tuple[int, int], ...] = (
    (7, 5), (8, 0), (8, 6), (8, 7), (8, 9), (9, 0),
    (10, 0), (10, 1), (10, 3), (11, 0), (12, 0), (12, 1),
)

#: Oldest Triton that generates code for each arch family (see module docstring; unverified
#: for Blackwell) and newest Triton known to work, as (major, minor) tuples.
TRITON_MIN_VERSION = {10: (3, 3), 11: (3, 3), 12: (3, 3)}
TRITON_SM75_MAX_EXCLUSIVE = (3, 3)

#: Head dims the Triton kernels are compiled for; inputs are zero-padded up to the next one.
TRITON_HEAD_DIMS = (64, 128, 256)
#: Head dims of the CUDA kernels (upstream instantiates 64 and 128 only).
CUDA_HEAD_DIMS = (64, 128)


@dataclass(frozen=True)
class Variant:
    """One public attention entry point and what it supports.

    ``min_capability``/``capabilities``: the archs it can run on (``capabilities`` empty = every
    known arch >= ``min_capability``). ``head_dims``: the padded head dims its kernels take (read
    by ``api.py``). ``cuda_op``: the ``torch.ops.sageattention`` op it calls (None for Triton
    variants). What ``sageattn`` passes when it picks a variant is in ``SAGEATTN_PREFERENCE``.
    """

    name: str
    backend: str  # "triton" or "cuda"
    min_capability: tuple[int, int]
    capabilities: tuple[tuple[int, int], ...] = ()
    dtypes: tuple[str, ...] = ("float16", "bfloat16")
    head_dims: tuple[int, ...] = TRITON_HEAD_DIMS
    cuda_op: str | None = None
    # False while the public function cannot call ``cuda_op`` yet (it raises instead): then
    # ``sageattn`` must not pick the variant even if a build registers the op.
    has_python_binding: bool = True

    def supports(self, capability: tuple[int, int]) -> bool:
        if tuple(capability) < self.min_capability:
            return False
        return not self.capabilities or tuple(capability) in self.capabilities


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("sageattn_qk_int8_pv_fp16_triton", "triton", (7, 5)),
        Variant("sageattn_qk_int8_pv_fp8_triton", "triton", (8, 9)),
        Variant(
            "sageattn_qk_int8_pv_fp16_cuda", "cuda", (8, 0), head_dims=CUDA_HEAD_DIMS,
            cuda_op="qk_int8_sv_f16_attn",
        ),
        Variant(
            "sageattn_qk_int8_pv_fp8_cuda", "cuda", (8, 9),
            capabilities=((8, 9), (10, 0), (10, 1), (10, 3), (11, 0), (12, 0), (12, 1)),
            head_dims=CUDA_HEAD_DIMS, cuda_op="qk_int8_sv_f8_attn",
        ),
        Variant(
            "sageattn_qk_int8_pv_fp8_cuda_sm90", "cuda", (9, 0), capabilities=((9, 0),),
            head_dims=CUDA_HEAD_DIMS, cuda_op="qk_int8_sv_f8_attn_sm90",
        ),
    )
}

_FP16_TRITON = "sageattn_qk_int8_pv_fp16_triton"
_FP8_TRITON = "sageattn_qk_int8_pv_fp8_triton"

#: ``sageattn``'s preference per arch, best first. Why: FP8 P·V doubles the P·V MMA rate on
#: sm89+ (notes §2.3.4) at cosine ~0.9993 (H100, hd128, L=4K: 0.99925 non-causal, 0.99936
#: causal, vs 0.99991 for FP16 P·V; README); the CUDA kernels beat Triton where built (notes §3);
#: sm120/121 use per-warp Q/K like upstream (§1.4).
SAGEATTN_PREFERENCE: dict[tuple[int, int], tuple[tuple[str, dict], ...]] = {}
for _cap in KNOWN_CAPABILITIES:
    if _cap == (7, 5):
        _pref = ((_FP16_TRITON, {}),)
    elif _cap < (8, 9):  # sm80, sm86, sm87
        _pref = (("sageattn_qk_int8_pv_fp16_cuda", {"pv_accum_dtype": "fp32"}), (_FP16_TRITON, {}))
    elif _cap == (9, 0):
        # The wgmma kernel first since it overtook Triton FP8. H100, hd128, non-causal, kernel
        # only: Triton FP8 608 / 604 TOPS at 4K / 16K (benchmarks/results/h100-2026-11-23-session3/),
        # qk_int8_sv_f8_attn_sm90 666 / 753 (TMA + warp-specialized version, ...-session4/).
        _pref = (("sageattn_qk_int8_pv_fp8_cuda_sm90", {"pv_accum_dtype": "fp32+fp32"}), (_FP8_TRITON, {}))
    elif _cap == (8, 9):
        _pref = (("sageattn_qk_int8_pv_fp8_cuda", {"pv_accum_dtype": "fp32+fp16"}), (_FP8_TRITON, {}))
    else:  # Blackwell: sm100 .. sm121
        _pref = (
            ("sageattn_qk_int8_pv_fp8_cuda", {"qk_quant_gran": "per_warp", "pv_accum_dtype": "fp32+fp16"}),
            (_FP8_TRITON, {}),
        )
    SAGEATTN_PREFERENCE[_cap] = _pref


@dataclass(frozen=True)
class Selection:
    """What ``sageattn`` calls: the public function's name and the keyword arguments it adds."""

    name: str
    kwargs: dict


def _version_tuple(version: str | None) -> tuple[int, int] | None:
    if version is None:
        return None
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ValueError(f"cannot parse triton version {version!r}") from None


def triton_problem(capability: tuple[int, int], triton_version: str | None) -> str | None:
    """Why Triton cannot run our kernels on ``capability`` (None when it can)."""
    tv = _version_tuple(triton_version)
    if tv is None:
        return "triton is not installed (pip install triton)"
    cap = tuple(capability)
    if cap == (7, 5) and tv >= TRITON_SM75_MAX_EXCLUSIVE:
        return (
            f"triton {triton_version} is reported not to run the INT8 kernels on sm75 "
            "(works with triton 3.0-3.2; https://github.com/thu-ml/SageAttention/issues/197): "
            "install triton<3.3"
        )
    need = TRITON_MIN_VERSION.get(cap[0])
    if need is not None and tv < need:
        return f"sm{cap[0]}{cap[1]} needs triton >= {need[0]}.{need[1]}, found {triton_version}"
    return None


_ARCH_ENTRY = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$")


def arch_runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether code compiled for arch-list entry ``arch`` (``"8.0"``, ``"9.0a"``, ``"8.9+PTX"``) can
    run on a GPU of ``capability``.

    CUDA's compatibility rules: machine code for X.Y runs on X.Z with Z >= Y (same major only); an
    arch-specific X.Ya target only on X.Y itself; a family X.Yf target on X.Z, Z >= Y; PTX of a
    plain X.Y (``+PTX``) on anything >= X.Y, JIT-compiled by the driver.
    """
    match = _ARCH_ENTRY.match(arch.strip())
    if match is None:
        raise ValueError(f"arch must look like 8.0, 9.0a or 8.9+PTX, got {arch!r}")
    major, minor, suffix, ptx = int(match.group(1)), int(match.group(2)), match.group(3), bool(match.group(4))
    cap = (int(capability[0]), int(capability[1]))
    if suffix == "a":
        return cap == (major, minor)
    if ptx and not suffix and cap >= (major, minor):
        return True
    return cap[0] == major and cap[1] >= minor


def select_kernel(
    capability: tuple[int, int], built_ops: frozenset[str] | set[str], triton_version: str | None,
    op_archs: dict[str, str] | None = None,
) -> Selection:
    """Pick ``sageattn``'s variant for a GPU of ``capability``.

    Parameters
    ----------
    capability : (major, minor), e.g. (8, 9)
    built_ops : set of str
        ``torch.ops.sageattention`` attention ops present in this build (see :func:`built_cuda_ops`).
    triton_version : str or None
        ``triton.__version__``, or None when triton is not installed.
    op_archs : dict or None
        op -> ``"8.9;12.0"``, the archs its code was compiled for (:func:`built_op_archs`); an op
        with no code that runs on ``capability`` is passed over. None: not checked.

    Returns
    -------
    Selection
        The first variant of ``SAGEATTN_PREFERENCE[capability]`` this build can run.

    Raises
    ------
    RuntimeError
        Unknown/unsupported arch, or none of its variants is available (message says why).
    """
    cap = (int(capability[0]), int(capability[1]))
    if cap < (7, 5):
        raise RuntimeError(
            f"SageAttention needs an sm75+ GPU (INT8 tensor cores); this GPU is sm{cap[0]}{cap[1]}"
        )
    if cap not in SAGEATTN_PREFERENCE:
        raise RuntimeError(
            f"sm{cap[0]}{cap[1]} is not a GPU architecture this SageAttention build knows "
            f"(known: {', '.join(f'sm{a}{b}' for a, b in KNOWN_CAPABILITIES)})"
        )
    reasons = []
    for name, kwargs in SAGEATTN_PREFERENCE[cap]:
        variant = VARIANTS[name]
        if variant.backend == "cuda":
            archs = (op_archs or {}).get(variant.cuda_op)
            runs_here = archs is None or any(arch_runs_on(a, cap) for a in archs.split(";") if a)
            if variant.cuda_op in built_ops and variant.has_python_binding and not runs_here:
                reasons.append(f"{name}: this build compiled sageattention::{variant.cuda_op} for {archs}, "
                               f"none of which runs on sm{cap[0]}{cap[1]}")
                continue
            if variant.cuda_op in built_ops and variant.has_python_binding:
                return Selection(name, dict(kwargs))
            if variant.cuda_op in built_ops:
                reasons.append(f"{name}: its Python entry point does not call sageattention::{variant.cuda_op} yet")
            else:
                reasons.append(f"{name}: CUDA op sageattention::{variant.cuda_op} not in this build")
        else:
            problem = triton_problem(cap, triton_version)
            if problem is None:
                return Selection(name, dict(kwargs))
            reasons.append(f"{name}: {problem}")
    raise RuntimeError(f"no SageAttention kernel can run on sm{cap[0]}{cap[1]}: " + "; ".join(reasons))


#: Non-attention ops of ``sageattention._C`` the API can use (``quantization_backend="cuda"``).
CUDA_HELPER_OPS = ("quant_per_block_int8", "mean_over_tokens")
#: The fused quantizers of the mma.sync attention ops: api._cuda_quantize with
#: quantization_backend="cuda" calls quant_mma_operands (the other three in one op call).
CUDA_MMA_QUANT_OPS = ("quant_mma_operands", "quant_per_thread_int8", "quant_v_fp8_operand", "mean_over_tokens")


def built_cuda_ops() -> frozenset[str]:
    """Ops of ``VARIANTS``, ``CUDA_HELPER_OPS`` and ``CUDA_MMA_QUANT_OPS`` present in the compiled
    ``sageattention._C`` (empty without it)."""
    try:
        from . import _ops
    except ImportError:
        return frozenset()
    if not _ops.cuda_ops_available():
        return frozenset()
    import torch

    names = {v.cuda_op for v in VARIANTS.values() if v.cuda_op} | set(CUDA_HELPER_OPS) | set(CUDA_MMA_QUANT_OPS)
    # Every schema is defined whatever the build (csrc/torch_bindings.cpp); an op is built when a
    # CUDA kernel is registered for it (its arch family was in the build's arch list).
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key
    return frozenset(
        n for n in names if hasattr(torch.ops.sageattention, n) and has_cuda(f"sageattention::{n}", "CUDA")
    )


def built_op_archs() -> dict[str, str] | None:
    """op -> ``"8.0;8.6"``: the archs each attention op of the installed build was compiled for
    (``sageattention/_build_info.py``, written by setup.py); None when unknown (source tree)."""
    try:
        from . import _build_info
    except ImportError:
        return None
    return getattr(_build_info, "OP_ARCHS", None)


def missing_cuda_reason() -> str:
    """Why the compiled CUDA kernels cannot be used (from ``sageattention._ops`` when it exists)."""
    try:
        from . import _ops
    except ImportError as exc:
        return f"the compiled extension loader sageattention._ops cannot be imported ({exc})"
    return _ops.missing_build_reason()


def installed_triton_version() -> str | None:
    """``triton.__version__`` or None, without importing triton's heavy modules twice."""
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__
