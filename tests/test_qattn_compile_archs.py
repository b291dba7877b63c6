"""Compile-only checks of the attention kernels for archs no machine here can run.

Issue 5 asks for 8.0, 8.6, 8.9 and 12.0 with nvcc 13.0. The kernel templates are torch-free
(csrc/qattn/qk_int8_attn.cuh), so one generated instantiation per family compiles with plain
nvcc in seconds; the wheel build (tests/test_build_wheel.py) covers 8.0 with torch. For each arch:
the object holds SASS for exactly that arch (cuobjdump) and ptxas spills no more than the case
allows (registers and spills are printed in the test log). hd128 runs two m16 tiles per warp
(qk_int8_attn.cuh, m_tiles): all 255 registers and a few spilled loop-invariant values, which
the H100 measured faster than the spill-free 16-row layout; ``SAGEATTN_QATTN_WARP_ROWS=16`` still
builds that layout without spills and with half the MMAs. Marker ``build``: skips without nvcc
unless ``SAGEATTN_REQUIRE_BUILD_TEST=1`` (CI sets it).

The Hopper wgmma kernel (issue 6) is compiled for ``9.0a`` (``compute_90a``/``sm_90a``), and its
SASS must show the warpgroup MMAs of both matmuls: ``IGMMA`` (s8 Q·Kᵀ) and ``QGMMA`` (e4m3 P·V),
as nvcc 13.0 names them (``IGMMA.64x64x32.S8.S8``, ``QGMMA.64x128x32.F32.E4M3.E4M3``), without spills or
serialized wgmma, also for each schedule variant of an experiment build (``-DSAGEATTN_SM90_VARIANTS``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from scripts import cuda_env
from scripts.wheel_verify import cuobjdump_archs

from _wheel_build import sass_text, skip_or_fail

REPO = Path(__file__).resolve().parent.parent
INSTANTIATIONS = REPO / "csrc" / "qattn" / "instantiations"

SIXTEEN_ROWS = ("SAGEATTN_QATTN_WARP_ROWS=16",)
# Spill stores ptxas may report, in bytes. The two-m-tile hd128 builds measured 4-42 B with
# nvcc 13.0 (16-20 B for the four below; the fp32+fp32 e4m3 build 42 B on sm_89): loop-invariant values
# reloaded from L1 a few times per KV block (SASS, session 7). 64 B keeps a margin for other ptxas
# versions and fails if a change makes the loop itself spill. Everything else: none.
TWO_TILE_SPILL_BYTES = 64
# Each family's sources with the default pv_accum_dtype (hd128: most registers), for every arch
# the family ships; then hd64 (16-row warps) and the 16-row hd128 layout, which must not spill.
CASES = [
    ("qk_int8_sv_f16_accum_f32_hd128_sm80.cu", "8.0", (), TWO_TILE_SPILL_BYTES),
    ("qk_int8_sv_f16_accum_f32_hd128_sm80.cu", "8.6", (), TWO_TILE_SPILL_BYTES),
    ("qk_int8_sv_f8_accum_f32f16_hd128_sm89.cu", "8.9", (), TWO_TILE_SPILL_BYTES),
    ("qk_int8_sv_f8_accum_f32f16_hd128_sm89.cu", "12.0", (), TWO_TILE_SPILL_BYTES),
    ("qk_int8_sv_f8_accum_f32f32_hd128_sm90.cu", "9.0a", (), 0),
    ("qk_int8_sv_f16_accum_f32_hd64_sm80.cu", "8.0", (), 0),
    ("qk_int8_sv_f8_accum_f32f16_hd64_sm89.cu", "8.9", (), 0),
    ("qk_int8_sv_f16_accum_f32_hd128_sm80.cu", "8.0", SIXTEEN_ROWS, 0),
    ("qk_int8_sv_f8_accum_f32f16_hd128_sm89.cu", "8.9", SIXTEEN_ROWS, 0),
]
SM90_CASES = ["qk_int8_sv_f8_accum_f32f32_hd64_sm90.cu", "qk_int8_sv_f8_accum_f32f32_hd128_sm90.cu"]

pytestmark = pytest.mark.build


def _nvcc() -> Path:
    nvcc, where = cuda_env.find_nvcc()
    if nvcc is None:
        skip_or_fail(f"nvcc not found ({where})")
    return nvcc


def _compile(nvcc: Path, source: str, arch: str, obj: Path, defines: tuple[str, ...] = ()) -> str:
    sm = "sm_" + arch.replace(".", "")
    cmd = [str(nvcc), "-c", str(INSTANTIATIONS / source), "-o", str(obj), "-O3", "-std=c++17",
           f"-gencode=arch=compute_{arch.replace('.', '')},code={sm}", "-Xptxas", "-v"]
    cmd += [f"-D{d}" for d in defines]
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, f"nvcc failed for {arch}:\n{done.stdout[-4000:]}"
    return done.stdout


@pytest.mark.parametrize("source,arch,defines,spill_bytes", CASES,
                         ids=[f"{s.removesuffix('.cu').rsplit('_', 1)[0]}-{a}" + ("-16rows" if d else "")
                              for s, a, d, _ in CASES])
def test_instantiation_compiles_within_its_spills(source, arch, defines, spill_bytes, tmp_path, capsys):
    nvcc = _nvcc()
    sm = "sm_" + arch.replace(".", "")
    obj = tmp_path / "kernel.o"
    log = _compile(nvcc, source, arch, obj, defines)
    registers = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert registers and spills, f"no ptxas -v report in:\n{log[-2000:]}"
    with capsys.disabled():
        print(f"\n{source} for {sm} {' '.join(defines)}: registers {'/'.join(registers)}, "
              f"spill stores {'/'.join(st for st, _ in spills)} B", flush=True)
    assert all(int(st) <= spill_bytes for st, _ in spills), f"{source} spills on {sm}: {spills} (allowed {spill_bytes} B)"
    sass, _ = cuobjdump_archs(obj)
    assert sass == {sm}, f"expected SASS for {sm} only, cuobjdump lists {sorted(sass)}"
    if defines:
        # The macro must reach the kernel, and hd128's default must be the two-m-tile layout: a
        # warp of 16 rows issues half the MMAs of a warp of 32 (same loop, one tile).
        default = tmp_path / "default.o"
        _compile(nvcc, source, arch, default)
        mmas = [len(re.findall(r"\b[HIQ]MMA\.", sass_text(o))) for o in (obj, default)]
        assert 2 * mmas[0] == mmas[1], f"{' '.join(defines)}: MMAs {mmas[0]}, default {mmas[1]} (expected twice as many)"


#: An experiment build of the sm90 kernel holds every schedule variant of kSm90Variants
#: (csrc/qattn/qk_int8_attn_params.h); a default build holds variant 0 alone.
SM90_VARIANTS = ("SAGEATTN_SM90_VARIANTS",)
SM90_VARIANT_COUNT = len(re.search(r"kSm90Variants\[\] = \{([^}]*)\}",
                                   (REPO / "csrc" / "qattn" / "qk_int8_attn_params.h").read_text()).group(1).split(","))


@pytest.mark.parametrize("defines", [(), SM90_VARIANTS], ids=["default", "variants"])
@pytest.mark.parametrize("source", SM90_CASES)
def test_sm90_sass_has_warpgroup_mmas(source, defines, tmp_path, capsys):
    """Both matmuls of the wgmma kernel are warpgroup MMAs in SASS, and ptxas did not serialize them
    nor spill, in the default build and in every schedule variant of an experiment build."""
    nvcc = _nvcc()
    obj = tmp_path / "kernel.o"
    log = _compile(nvcc, source, "9.0a", obj, defines)
    assert "serialized" not in log, f"ptxas serialized the wgmma instructions:\n{log[-2000:]}"
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert spills and all(s == ("0", "0") for s in spills), f"ptxas spilled: {spills}"
    sass = sass_text(obj)
    kernels = set(re.findall(r"Function : (\S*QkInt8AttnSm90Kernel\S*)", sass))
    assert len(kernels) == (SM90_VARIANT_COUNT if defines else 1), f"{' '.join(defines)}: kernels {sorted(kernels)}"
    names = sorted(set(re.findall(r"\b([A-Z]GMMA\.[0-9x]+\.[A-Z0-9.]+)", sass)))
    with capsys.disabled():
        print(f"\n{source} sm_90a {' '.join(defines)}: {len(kernels)} kernels, warpgroup MMAs: {names}", flush=True)
    assert any(n.startswith("IGMMA.") and n.endswith("S8.S8") for n in names), f"no s8 IGMMA in SASS: {names}"
    assert any(n.startswith("QGMMA.") and "E4M3.E4M3" in n for n in names), f"no e4m3 QGMMA in SASS: {names}"
