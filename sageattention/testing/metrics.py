"""Accuracy metrics and the one tolerance table every accuracy test reads.

Metrics are the papers' (research notes §2.1; SageAttention §4.3, SageAttention2 A.7), computed in
float64 on flattened tensors, ``O`` the reference and ``O'`` the output under test:

    cosine   = Σ O·O' / (sqrt(Σ O²) · sqrt(Σ O'²))
    rel_l1   = Σ |O - O'| / Σ |O|
    rmse     = sqrt(mean((O - O')²))

``assert_close_to_reference`` applies STYLE.md H4's rule: the kernel's error against the exact
reference may exceed the error of a PyTorch emulation of the same quantization by at most a factor
plus a small noise term, and must also meet the scheme's absolute floors from ``TOLERANCES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _flat64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64).flatten()


def cosine_similarity(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Cosine similarity of the flattened tensors (1.0 when both are all zero)."""
    o, r = _flat64(out), _flat64(ref)
    denom = o.norm() * r.norm()
    if denom == 0:
        return 1.0 if o.norm() == r.norm() else 0.0
    return float(torch.dot(o, r) / denom)


def relative_l1(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``Σ|ref - out| / Σ|ref|`` (absolute L1 when ref is all zero)."""
    o, r = _flat64(out), _flat64(ref)
    denom = r.abs().sum()
    err = (r - o).abs().sum()
    return float(err / denom) if denom > 0 else float(err)


def rmse(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Root mean squared error."""
    o, r = _flat64(out), _flat64(ref)
    return float(((o - r) ** 2).mean().sqrt()) if o.numel() else 0.0


@dataclass(frozen=True)
class Tolerance:
    """Floors for one quantization scheme, per input kind ("randn", "biased_k", "outliers")."""

    min_cosine: dict
    max_rel_l1: dict
    #: err(kernel) <= emulation_factor * err(emulated) + emulation_noise  (rel-L1 vs exact)
    emulation_factor: float = 1.25
    emulation_noise: float = 2e-3


# Keyed by (QK dtype, PV dtype, PV accumulation). Why these floors: the accuracy targets
# (fp16 P·V: cos >= 0.9998, rel-L1 <= 0.015 on randn, cos >= 0.9995 with channel-biased K; FP8 P·V:
# cos >= 0.9993, rel-L1 <= 0.037 — the FP8 kernels people use today measure 0.99927 / 0.038). In
# the interpreter (L <= 130, D 64/72) we measured fp16 P·V cos 0.99995 / rel-L1 0.010 and FP8 P·V
# cos 0.99945 / rel-L1 0.033 on randn. FP8 P·V floors are looser than the targets
# (TARGETS below, for benchmark sizes): over 40 seeds at L = 130, bf16, the *emulation* of the
# scheme itself reached cos 0.99924 and rel-L1 0.0389 (e4m3 keeps 3 mantissa bits, ~2% error per
# P and V element, averaged over only L keys), and the kernel tracks it (kernel/emulation rel-L1
# ratio <= 1.0). Same study for fp16 P·V: worst cos 0.99991, rel-L1 0.0132, ratio <= 1.08. "outliers" (|x| = 1e4 in 0.2% of Q, K and V entries) has no
# precision floor: one 1e4 entry sets its block's INT8 scale and flushes the rest of the block to
# 0, so the *scheme* is inaccurate there (its PyTorch emulation measured rel-L1 1.87, cos 0.10).
# What must hold is finiteness (no fp16 overflow to Inf/NaN) and agreement with the emulation.
# emulation_factor/noise: kernel and emulation differ by exp2 ulps and MMA summation order only
# (EMULATION_TOLERANCE in emulation.py), a few percent of the quantization error itself.
_FP16_PV = Tolerance(
    min_cosine={"randn": 0.9998, "biased_k": 0.9995, "outliers": -1.0},
    max_rel_l1={"randn": 0.015, "biased_k": 0.03, "outliers": float("inf")},
)
_FP8_PV = Tolerance(
    min_cosine={"randn": 0.999, "biased_k": 0.999, "outliers": -1.0},
    max_rel_l1={"randn": 0.045, "biased_k": 0.05, "outliers": float("inf")},
)
# The accumulation modes of the CUDA mma.sync kernels (csrc/qattn/) share their P·V dtype's floors:
# "fp16" (O accumulated in fp16 registers; upstream: no accuracy loss vs fp32 accumulation,
# SageAttention Tables 4-5); FP8 "fp32+fp32" (two-level) and "fp32+fp16" (2++: V in ±2.25,
# fp16-accumulated block partials, same accuracy in SageAttention2++ Table 2). Measured on the
# H100 (compute_80/89 PTX JIT-compiled for sm_90), hd128 L=4096 randn: fp16 cos 0.99994 / rel-L1
# 0.0108; FP8 fp32+fp32 0.999274 / 0.0381, fp32+fp16 0.999292 / 0.0377.
TOLERANCES: dict[tuple[str, str, str], Tolerance] = {
    ("int8", "fp16", "fp32"): _FP16_PV,
    ("int8", "fp16", "fp16+fp32"): _FP16_PV,
    ("int8", "fp16", "fp16"): _FP16_PV,
    ("int8", "fp8", "fp32"): _FP8_PV,
    ("int8", "fp8", "fp32+fp32"): _FP8_PV,
    ("int8", "fp8", "fp32+fp16"): _FP8_PV,
}

#: The issue's accuracy targets at benchmark sizes (B 4, H 32, L >= 1K, hd 128, randn): scheme ->
#: (min cosine, max rel-L1). The CUDA FP16 P·V GPU tests assert them at hd128, L=4096
#: (tests/test_qk_int8_sv_f16_attn_cuda.py); the FP8 rows are recorded, not asserted: every FP8 P·V
#: kernel misses them by a hair on the H100 (hd128, L=4K: Triton cos 0.99924 / rel-L1 0.039, CUDA
#: sm89 path 0.99927-0.99929 / 0.0377-0.0381) because the e4m3 floor of the scheme is 0.99931 /
#: 0.037 on these inputs (emulation with exact Q·Kᵀ), so their tests judge them by TOLERANCES and
#: by the distance to their emulation.
TARGETS: dict[tuple[str, str, str], tuple[float, float]] = {
    ("int8", "fp16", "fp32"): (0.9998, 0.015),
    ("int8", "fp8", "fp32"): (0.9993, 0.037),
    # The CUDA kernels' own (issue 5) targets; the FP16 ones are asserted at hd128, L=4096, randn
    # (tests/test_qk_int8_sv_f16_attn_cuda.py), the FP8 ones recorded like the row above.
    ("int8", "fp16", "fp16+fp32"): (0.9998, 0.015),
    ("int8", "fp16", "fp16"): (0.9998, 0.015),
    ("int8", "fp8", "fp32+fp32"): (0.9993, 0.037),
    ("int8", "fp8", "fp32+fp16"): (0.9993, 0.037),
}

#: Max |lse - lse_exact| (natural log) after the K-smoothing correction. Why: INT8 Q·Kᵀ moves each
#: score by up to ~absmax_q·absmax_k·D/127² per product; measured 0.024 on randn (D 64, L 130) and
#: the bound leaves 4x. An uncorrected LSE is off by sm_scale·q·k̄, ~1-10 with channel-biased K.
LSE_MAX_ABS_ERROR = 0.1


def metrics(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """``{"cosine", "rel_l1", "rmse"}`` of ``out`` against ``ref``."""
    return {"cosine": cosine_similarity(out, ref), "rel_l1": relative_l1(out, ref), "rmse": rmse(out, ref)}


def assert_close_to_reference(
    out: torch.Tensor,
    ref: torch.Tensor,
    *,
    scheme: tuple[str, str, str],
    emulated: torch.Tensor | None = None,
    inputs: str = "randn",
    context: str = "",
) -> dict:
    """Assert ``out`` (kernel) is as accurate as its quantization scheme allows.

    Checks (all against the exact reference ``ref``): finite output; cosine >= floor; rel-L1 <=
    ceiling; and, when the emulated output is given, ``rel_l1(out) <= factor * rel_l1(emulated) +
    noise``. Raises ``AssertionError`` listing every metric; returns the metrics otherwise.
    """
    if scheme not in TOLERANCES:
        raise KeyError(f"no tolerance for scheme {scheme}; known: {sorted(TOLERANCES)}")
    tol = TOLERANCES[scheme]
    if inputs not in tol.min_cosine:
        raise KeyError(f"no tolerance for inputs {inputs!r}; known: {sorted(tol.min_cosine)}")
    if out.shape != ref.shape:
        raise AssertionError(f"{context}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    got = metrics(out, ref)
    problems = []
    finite = bool(torch.isfinite(out.detach().to(torch.float64)).all())
    if not finite:
        problems.append("output has NaN/Inf")
    if not got["cosine"] >= tol.min_cosine[inputs]:
        problems.append(f"cosine {got['cosine']:.6f} < {tol.min_cosine[inputs]}")
    if not got["rel_l1"] <= tol.max_rel_l1[inputs]:
        problems.append(f"rel-L1 {got['rel_l1']:.5f} > {tol.max_rel_l1[inputs]}")
    if emulated is not None:
        emu = metrics(emulated, ref)
        got["emulated_rel_l1"] = emu["rel_l1"]
        bound = tol.emulation_factor * emu["rel_l1"] + tol.emulation_noise
        if not got["rel_l1"] <= bound:
            problems.append(
                f"rel-L1 {got['rel_l1']:.5f} > {tol.emulation_factor} x emulated {emu['rel_l1']:.5f} "
                f"+ {tol.emulation_noise} = {bound:.5f} (kernel worse than its own quantization)"
            )
    if problems:
        detail = ", ".join(f"{k}={v:.6g}" for k, v in got.items())
        raise AssertionError(f"{context} [{scheme}, {inputs}]: " + "; ".join(problems) + f" ({detail})")
    return got
