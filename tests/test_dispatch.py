"""The support table and ``select_kernel``: every arch from sm75 to sm121, every build state."""

from __future__ import annotations

import dataclasses

import pytest

from sageattention import _support
from sageattention._support import KNOWN_CAPABILITIES, SAGEATTN_PREFERENCE, VARIANTS, select_kernel

ALL_CUDA_OPS = frozenset(v.cuda_op for v in VARIANTS.values() if v.cuda_op)
ATTENTION_AND_HELPER_OPS = ALL_CUDA_OPS | set(_support.CUDA_HELPER_OPS) | set(_support.CUDA_MMA_QUANT_OPS)
NEW_TRITON = "3.8.0"


def test_every_known_arch_has_a_preference_and_variants_support_it():
    assert set(SAGEATTN_PREFERENCE) == set(KNOWN_CAPABILITIES)
    for cap, prefs in SAGEATTN_PREFERENCE.items():
        assert prefs, f"sm{cap} has no candidate"
        for name, _ in prefs:
            assert VARIANTS[name].supports(cap), f"{name} listed for sm{cap} but does not support it"
        # Every arch has a Triton candidate (no compiled code needed).
        assert any(VARIANTS[name].backend == "triton" for name, _ in prefs), f"sm{cap} has no Triton fallback"


@pytest.mark.parametrize("cap", KNOWN_CAPABILITIES, ids=lambda c: f"sm{c[0]}{c[1]}")
def test_without_cuda_ops_triton_is_chosen(cap):
    if cap == (7, 5):
        with pytest.raises(RuntimeError, match="triton<3.3"):
            select_kernel(cap, frozenset(), NEW_TRITON)
        assert select_kernel(cap, frozenset(), "3.2.0").name == "sageattn_qk_int8_pv_fp16_triton"
        return
    sel = select_kernel(cap, frozenset(), NEW_TRITON)
    expected = "sageattn_qk_int8_pv_fp8_triton" if cap >= (8, 9) else "sageattn_qk_int8_pv_fp16_triton"
    assert sel.name == expected


@pytest.mark.parametrize("cap", KNOWN_CAPABILITIES, ids=lambda c: f"sm{c[0]}{c[1]}")
def test_registered_ops_without_a_python_binding_are_not_chosen(cap, monkeypatch):
    """A variant whose entry point cannot call its op yet (has_python_binding=False) must not be
    chosen even when the build registers the op."""
    triton_version = "3.2.0" if cap == (7, 5) else NEW_TRITON
    assert all(v.has_python_binding for v in VARIANTS.values()), "every entry point calls its op now"
    chosen = select_kernel(cap, ALL_CUDA_OPS, triton_version)
    if VARIANTS[chosen.name].backend != "cuda":
        return
    monkeypatch.setitem(VARIANTS, chosen.name, dataclasses.replace(VARIANTS[chosen.name], has_python_binding=False))
    assert select_kernel(cap, ALL_CUDA_OPS, triton_version).name != chosen.name
    with pytest.raises(RuntimeError, match="does not call"):
        select_kernel(cap, frozenset({VARIANTS[chosen.name].cuda_op}), None)


@pytest.mark.parametrize("cap", KNOWN_CAPABILITIES, ids=lambda c: f"sm{c[0]}{c[1]}")
def test_with_all_cuda_ops_the_best_measured_kernel_is_chosen(cap):
    triton_version = "3.2.0" if cap == (7, 5) else NEW_TRITON
    sel = select_kernel(cap, ALL_CUDA_OPS, triton_version)
    expected = {
        (7, 5): "sageattn_qk_int8_pv_fp16_triton",
        (8, 0): "sageattn_qk_int8_pv_fp16_cuda",
        (8, 6): "sageattn_qk_int8_pv_fp16_cuda",
        (8, 7): "sageattn_qk_int8_pv_fp16_cuda",
        (8, 9): "sageattn_qk_int8_pv_fp8_cuda",
        # The TMA/wgmma kernel beats Triton FP8 on the H100 (issue 6, session 4 measurements).
        (9, 0): "sageattn_qk_int8_pv_fp8_cuda_sm90",
    }.get(cap, "sageattn_qk_int8_pv_fp8_cuda")
    assert sel.name == expected
    if cap >= (10, 0):
        assert sel.kwargs == {"qk_quant_gran": "per_warp", "pv_accum_dtype": "fp32+fp16"}


def test_sm90_without_the_wgmma_kernel_uses_triton_fp8():
    sel = select_kernel((9, 0), ALL_CUDA_OPS - {"qk_int8_sv_f8_attn_sm90"}, NEW_TRITON)
    assert sel == _support.Selection("sageattn_qk_int8_pv_fp8_triton", {})
    sel = select_kernel((9, 0), ALL_CUDA_OPS, NEW_TRITON)
    assert sel == _support.Selection("sageattn_qk_int8_pv_fp8_cuda_sm90", {"pv_accum_dtype": "fp32+fp32"})


def test_unknown_and_too_old_archs_raise():
    with pytest.raises(RuntimeError, match="sm75"):
        select_kernel((7, 0), ALL_CUDA_OPS, NEW_TRITON)
    with pytest.raises(RuntimeError, match="sm130"):
        select_kernel((13, 0), ALL_CUDA_OPS, NEW_TRITON)


def test_no_triton_and_no_cuda_names_both_causes():
    with pytest.raises(RuntimeError) as info:
        select_kernel((8, 9), frozenset(), None)
    msg = str(info.value)
    assert "qk_int8_sv_f8_attn" in msg and "triton is not installed" in msg


def test_old_triton_on_blackwell():
    with pytest.raises(RuntimeError, match="triton >= 3.3"):
        select_kernel((12, 0), frozenset(), "3.2.0")


def test_selection_is_deterministic():
    first = [select_kernel(c, frozenset(), NEW_TRITON) for c in KNOWN_CAPABILITIES[1:]]
    second = [select_kernel(c, frozenset(), NEW_TRITON) for c in KNOWN_CAPABILITIES[1:]]
    assert first == second


def test_this_build_reports_its_cuda_ops():
    # Whatever the build, the reported ops are a subset of the table's ops and the reason string
    # is non-empty when none are there.
    built = _support.built_cuda_ops()
    assert built <= ATTENTION_AND_HELPER_OPS
    if not built:
        assert _support.missing_cuda_reason()


@pytest.mark.parametrize(
    "arch,cap,runs",
    [
        ("8.0", (8, 0), True), ("8.0", (8, 6), True), ("8.0", (8, 9), True), ("8.0", (9, 0), False),
        ("8.9", (12, 0), False), ("12.0", (12, 1), True), ("12.1", (12, 0), False),
        ("9.0a", (9, 0), True), ("10.0a", (10, 3), False), ("10.0f", (10, 3), True),
        ("8.0+PTX", (9, 0), True), ("8.9+PTX", (8, 6), False), ("8.9+PTX", (12, 0), True),
    ],
)
def test_arch_runs_on_follows_cuda_compatibility(arch, cap, runs):
    assert _support.arch_runs_on(arch, cap) is runs


def test_arch_runs_on_rejects_garbage():
    with pytest.raises(ValueError, match="arch must look like"):
        _support.arch_runs_on("sm_80", (8, 0))


def test_an_op_without_code_for_the_gpu_is_passed_over():
    """A wheel whose FP8 kernel was built for 8.9 only must not pick it on sm120 (SASS is per major)."""
    built = frozenset({"qk_int8_sv_f8_attn", "qk_int8_sv_f16_attn"})
    only_89 = {"qk_int8_sv_f8_attn": "8.9", "qk_int8_sv_f16_attn": "8.0;8.6"}
    assert select_kernel((12, 0), built, NEW_TRITON, only_89).name == "sageattn_qk_int8_pv_fp8_triton"
    assert select_kernel((8, 9), built, NEW_TRITON, only_89).name == "sageattn_qk_int8_pv_fp8_cuda"
    assert select_kernel((12, 0), built, NEW_TRITON, {"qk_int8_sv_f8_attn": "8.9;12.0"}).name == (
        "sageattn_qk_int8_pv_fp8_cuda")
    with pytest.raises(RuntimeError, match="compiled sageattention::qk_int8_sv_f8_attn for 8.9, none of which"):
        select_kernel((12, 0), built, None, only_89)
