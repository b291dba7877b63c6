"""Compile-only checks of the attention kernels for archs no machine here can run.

Issue 5 asks for 8.0, 8.6, 8.9 and 12.0 with nvcc 13.0. The kernel templates are torch-free
(csrc/qattn/qk_int8_attn.cuh), so one generated instantiation per family compiles with plain
nvcc in seconds; the wheel build (tests/test_build_wheel.py) covers 8.0 with torch. For each arch:
the object holds SASS for exactly that arch (cuobjdump) and ptxas reports no spills (registers
are printed in the test log). The opt-in KV-loop schedule ``SAGEATTN_QATTN_S_AHEAD=1``
(qk_int8_attn.cuh) is compiled too, for the archs whose sources use it natively. Marker
``build``: skips without nvcc unless ``SAGEATTN_REQUIRE_BUILD_TEST=1`` (CI sets it).

The Hopper wgmma kernel (issue 6) is compiled for ``9.0a`` (``compute_90a``/``sm_90a``), and its
SASS must show the warpgroup MMAs of both matmuls: ``IGMMA`` (s8 Q·Kᵀ) and ``QGMMA`` (e4m3 P·V),
as nvcc 13.0 names them (``IGMMA.64x64x32.S8.S8``, ``QGMMA.64x128x32.F32.E4M3.E4M3``).
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

S_AHEAD = ("SAGEATTN_QATTN_S_AHEAD=1",)
# The heaviest instantiation of each family (hd128; fp32 O accumulation): most registers.
CASES = [
    ("qk_int8_sv_f16_accum_f32_hd128_sm80.cu", "8.0", ()),
    ("qk_int8_sv_f16_accum_f32_hd128_sm80.cu", "8.6", ()),
    ("qk_int8_sv_f8_accum_f32f16_hd128_sm89.cu", "8.9", ()),
    ("qk_int8_sv_f8_accum_f32f16_hd128_sm89.cu", "12.0", ()),
    ("qk_int8_sv_f8_accum_f32f32_hd128_sm90.cu", "9.0a", ()),
    # The S-ahead schedule holds a second S (32 registers): the fullest instantiations.
    ("qk_int8_sv_f16_accum_f16f32_hd128_sm80.cu", "8.0", S_AHEAD),
    ("qk_int8_sv_f8_accum_f32f32_hd128_sm89.cu", "8.9", S_AHEAD),
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


@pytest.mark.parametrize("source,arch,defines", CASES,
                         ids=[f"{s.split('_hd')[0]}-{a}" + ("-s_ahead" if d else "") for s, a, d in CASES])
def test_instantiation_compiles_without_spills(source, arch, defines, tmp_path, capsys):
    nvcc = _nvcc()
    sm = "sm_" + arch.replace(".", "")
    obj = tmp_path / "kernel.o"
    log = _compile(nvcc, source, arch, obj, defines)
    registers = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert registers and spills, f"no ptxas -v report in:\n{log[-2000:]}"
    with capsys.disabled():
        print(f"\n{source} for {sm} {' '.join(defines)}: registers {'/'.join(registers)}", flush=True)
    assert all(s == ("0", "0") for s in spills), f"{source} spills on {sm}: {spills}"
    sass, _ = cuobjdump_archs(obj)
    assert sass == {sm}, f"expected SASS for {sm} only, cuobjdump lists {sorted(sass)}"
    if defines:
        # The macro must reach the kernel: S-ahead issues S of the first block before the loop
        # and unrolls the loop by two, so its SASS holds more MMAs than the default schedule's.
        default = tmp_path / "default.o"
        _compile(nvcc, source, arch, default)
        mmas = [len(re.findall(r"\b[HIQ]MMA\.", sass_text(o))) for o in (obj, default)]
        assert mmas[0] > mmas[1], f"{' '.join(defines)} changed nothing: MMAs {mmas[0]} vs default {mmas[1]}"


@pytest.mark.parametrize("source", SM90_CASES)
def test_sm90_sass_has_warpgroup_mmas(source, tmp_path, capsys):
    """Both matmuls of the wgmma kernel are warpgroup MMAs in SASS, and ptxas did not serialize them."""
    nvcc = _nvcc()
    obj = tmp_path / "kernel.o"
    log = _compile(nvcc, source, "9.0a", obj)
    assert "serialized" not in log, f"ptxas serialized the wgmma instructions:\n{log[-2000:]}"
    assert all(s == ("0", "0") for s in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log))
    names = sorted(set(re.findall(r"\b([A-Z]GMMA\.[0-9x]+\.[A-Z0-9.]+)", sass_text(obj))))
    with capsys.disabled():
        print(f"\n{source} sm_90a warpgroup MMAs: {names}", flush=True)
    assert any(n.startswith("IGMMA.") and n.endswith("S8.S8") for n in names), f"no s8 IGMMA in SASS: {names}"
    assert any(n.startswith("QGMMA.") and "E4M3.E4M3" in n for n in names), f"no e4m3 QGMMA in SASS: {names}"
