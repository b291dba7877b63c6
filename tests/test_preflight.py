"""Preflight (scripts/preflight.py) and CUDA discovery (scripts/cuda_env.py) with fake toolchains.

No real nvcc or compiler is needed: each test hands :func:`preflight.check` a fake
:class:`Toolchain`, or points discovery at a fake directory tree.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path

import pytest

from scripts import cuda_env, preflight
from scripts.preflight import Compiler, PreflightError, Toolchain

# torch 2.12+ cpp_extension bounds for the CUDA versions used below (read from torch 2.14.1).
TORCH_GCC_BOUNDS = {"12.8": ((6, 0, 0), (15, 0)), "13.0": ((6, 0, 0), (16, 0))}
# torch 2.11.0 allowed gcc < 14 with CUDA 12.8 (pytorch#173366 relaxed it later).
TORCH_2_11_GCC_BOUNDS = {"12.8": ((6, 0, 0), (14, 0)), "13.0": ((6, 0, 0), (16, 0))}


@dataclasses.dataclass(frozen=True)
class FakeCell:
    """Just the scripts.matrix.Cell fields preflight reads."""

    name: str = "py311-torch214-cu130"
    python: str = "3.11"
    torch: str = "2.14.1"
    cuda: str = "13.0"
    packages: tuple = ("sageattention", "sageattn3")

    @property
    def cuda_tag(self) -> str:
        return "cu" + self.cuda.replace(".", "")


def good_toolchain(**changes) -> Toolchain:
    base = Toolchain(
        python="3.11", torch_version="2.14.1+cu130", torch_cuda="13.0",
        nvcc=Path("/opt/cuda/bin/nvcc"), nvcc_looked_in="PATH", nvcc_version="13.0.88",
        nvcc_gpu_codes={"sm_75", "sm_80", "sm_86", "sm_87", "sm_88", "sm_89", "sm_90", "sm_100",
                        "sm_103", "sm_110", "sm_120", "sm_121"},
        cuda_home=Path("/opt/cuda"),
        compilers=[Compiler("C++ (torch cpp_extension)", "c++", "gcc", "12.2.0"),
                   Compiler("nvcc host", "gcc", "gcc", "12.2.0")],
        torch_gcc_bounds=TORCH_GCC_BOUNDS,
        headers=cuda_env.CudaHeaders(found={"cuda_runtime_api.h": Path("/opt/cuda/include")}),
    )
    return dataclasses.replace(base, **changes)


def test_good_toolchain_passes_with_the_default_arch_list():
    report = preflight.check(FakeCell(), None, good_toolchain())
    assert report.archs == ["8.0", "8.6", "8.9", "9.0a", "10.0", "10.3", "12.0", "12.1"]
    assert report.nvcc_version == "13.0.88"
    assert any("13.0.88" in line for line in report.lines())


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"python": "3.12"}, r"Python 3\.12 is running but cell py311-torch214-cu130 needs Python 3\.11"),
        ({"torch_version": None}, r"torch is not importable: install torch==2\.14\.1"),
        ({"torch_version": "2.13.0+cu130"}, r"torch 2\.13\.0\+cu130 is installed but .* needs torch 2\.14\.1"),
        ({"torch_cuda": None}, r"CPU-only build"),
        ({"torch_cuda": "12.8"}, r"built with CUDA 12\.8 but cell .* needs CUDA 13\.0: install torch 2\.14\.1 from the cu130 index"),
        ({"nvcc": None, "nvcc_looked_in": "PATH (no CUDA_HOME set)"}, r"nvcc not found \(looked in PATH.*install the CUDA 13\.0 compiler"),
        ({"nvcc_version": "12.8.93"}, r"nvcc .* is CUDA 12\.8\.93 but torch .* CUDA 13\.0: set CUDA_HOME"),
        ({"nvcc_version": None}, r"printed no CUDA release"),
    ],
    ids=["python", "no-torch", "torch-version", "cpu-torch", "torch-cuda", "no-nvcc", "nvcc-vs-torch-cuda", "nvcc-silent"],
)
def test_each_mismatch_is_one_line_naming_the_fix(changes, message):
    with pytest.raises(PreflightError, match=message) as info:
        preflight.check(FakeCell(), None, good_toolchain(**changes))
    assert "\n" not in str(info.value)


def test_arch_the_nvcc_cannot_build():
    with pytest.raises(PreflightError, match=r"arch 7\.0 \(sm_70\) cannot be built by nvcc 13\.0"):
        preflight.check(FakeCell(), ["8.0", "7.0"], good_toolchain())


def test_arch_missing_from_this_nvccs_own_list():
    codes = good_toolchain().nvcc_gpu_codes - {"sm_121"}
    with pytest.raises(PreflightError, match=r"12\.1.*does not list sm_121"):
        preflight.check(FakeCell(), ["8.0", "12.1"], good_toolchain(nvcc_gpu_codes=codes))


def test_arch_the_torch_cannot_build():
    cell = FakeCell(name="py311-torch26-cu128", torch="2.6.0", cuda="12.8")
    tc = good_toolchain(torch_version="2.6.0+cu128", torch_cuda="12.8", nvcc_version="12.8.93",
                        nvcc_gpu_codes=None)
    with pytest.raises(PreflightError, match=r"unknown to torch 2\.6\.0"):
        preflight.check(cell, ["8.0", "12.0"], tc)


def test_gcc_newer_than_nvcc_accepts():
    compilers = [Compiler("nvcc host", "gcc-16", "gcc", "16.1.0")]
    with pytest.raises(PreflightError, match=r"gcc 16\.1\.0 .* newer than nvcc 13\.0 accepts \(gcc <= 15"):
        preflight.check(FakeCell(), None, good_toolchain(compilers=compilers))


def test_gcc_that_torch_2_11_rejects_with_cuda_12_8():
    cell = FakeCell(name="py311-torch211-cu128", torch="2.11.0", cuda="12.8")
    tc = good_toolchain(torch_version="2.11.0+cu128", torch_cuda="12.8", nvcc_version="12.8.93",
                        nvcc_gpu_codes=None, torch_gcc_bounds=TORCH_2_11_GCC_BOUNDS,
                        compilers=[Compiler("C++ (torch cpp_extension)", "c++", "gcc", "14.2.0")])
    with pytest.raises(PreflightError, match=r"torch 2\.11\.0\+cu128 rejects gcc 14\.2\.0 with CUDA 12\.8 .*< 14\.0"):
        preflight.check(cell, None, tc)
    # TORCH_DONT_CHECK_COMPILER_ABI switches torch's check off; nvcc 12.8 itself accepts gcc 14.
    assert preflight.check(cell, None, dataclasses.replace(tc, torch_checks_compiler=False)).archs


def test_gcc_too_old_for_torch_cxx20_headers():
    compilers = [Compiler("C++ (torch cpp_extension)", "c++", "gcc", "10.2.1")]
    with pytest.raises(PreflightError, match=r"gcc 10\.2\.1 .* too old for torch 2\.14\.1's headers \(needs gcc >= 11\.3\)"):
        preflight.check(FakeCell(), None, good_toolchain(compilers=compilers))


def test_clang_caps():
    compilers = [Compiler("nvcc host", "clang++", "clang", "21.1.0")]
    with pytest.raises(PreflightError, match=r"clang 21\.1\.0 .* clang <= 20"):
        preflight.check(FakeCell(), None, good_toolchain(compilers=compilers, torch_gcc_bounds=None))


def test_compiler_that_links_libstdcxx_statically():
    with pytest.raises(PreflightError, match=r"links libstdc\+\+ statically.*CXX=/usr/bin/g\+\+"):
        preflight.check(FakeCell(), None, good_toolchain(static_libstdcxx=True))
    assert preflight.check(FakeCell(), None, good_toolchain(static_libstdcxx=None)).archs  # unknown: no claim


def test_static_libstdcxx_probe_on_this_machine(tmp_path):
    import shutil

    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None or shutil.which("readelf") is None:
        pytest.skip("no C++ compiler or readelf here")
    assert cuda_env.links_libstdcxx_statically(cxx, tmp_path) is False  # Debian's g++ links it dynamically
    static = cuda_env.links_libstdcxx_statically(cxx, tmp_path, run=lambda cmd: (
        cuda_env._run(cmd + ["-static-libstdc++"]) if "-shared" in cmd else cuda_env._run(cmd)))
    assert static is True


def test_missing_compiler():
    compilers = [Compiler("C++ (torch cpp_extension)", "g++-13")]
    with pytest.raises(PreflightError, match=r"host compiler `g\+\+-13` .* not found"):
        preflight.check(FakeCell(), None, good_toolchain(compilers=compilers))


def test_package_not_built_by_the_cell():
    cell = FakeCell(packages=("sageattention",))
    with pytest.raises(PreflightError, match="does not build package 'sageattn3'"):
        preflight.check(cell, None, good_toolchain(), package="sageattn3")


def test_missing_runtime_headers_fail_and_missing_library_headers_are_noted():
    headers = cuda_env.CudaHeaders(missing=["cuda_runtime_api.h"])
    with pytest.raises(PreflightError, match="cuda_runtime_api.h not found.*cuda-cudart-dev"):
        preflight.check(FakeCell(), None, good_toolchain(headers=headers))
    headers = cuda_env.CudaHeaders(found={"cuda_runtime_api.h": Path("/opt/cuda/include")}, missing=["cublas_v2.h"])
    report = preflight.check(FakeCell(), None, good_toolchain(headers=headers))
    assert any("cublas_v2.h" in note for note in report.notes)


# ---- cell resolution ------------------------------------------------------------------------


class FakeMatrix:
    def __init__(self, *cells):
        self._cells = {c.name: c for c in cells}

    def cell(self, name):
        if name not in self._cells:
            raise KeyError(f"unknown cell {name!r}")
        return self._cells[name]


def test_cell_from_pixi_environment_name():
    matrix = FakeMatrix(FakeCell())
    cell = preflight.resolve_cell(None, env={"PIXI_ENVIRONMENT_NAME": "py311-torch214-cu130"}, matrix=matrix)
    assert cell.name == "py311-torch214-cu130"
    assert preflight.resolve_cell("py311-torch214-cu130", env={}, matrix=matrix) is cell


def test_no_cell_names_both_ways_to_give_one():
    with pytest.raises(PreflightError, match=r"--cell NAME .*pixi run -e CELL build"):
        preflight.resolve_cell(None, env={}, matrix=FakeMatrix())
    with pytest.raises(PreflightError, match="--cell"):
        preflight.resolve_cell(None, env={"PIXI_ENVIRONMENT_NAME": "default"}, matrix=FakeMatrix())


def test_unknown_cell_names_close_matches_from_the_real_matrix():
    with pytest.raises(PreflightError, match="py311-torch214-cu130"):
        preflight.resolve_cell("py311-torch214-cu13", env={})


# ---- discovery with fake trees --------------------------------------------------------------


def _touch(root: Path, *names: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_text("/* fake */\n")
    return root


ALL_HEADERS = cuda_env.HEADERS_TORCH_NEEDS


def test_full_toolkit_needs_no_extra_dirs(tmp_path):
    home = tmp_path / "cuda"
    _touch(home / "include", *ALL_HEADERS)
    found = cuda_env.find_cuda_headers(home, 13, site_dirs=[], triple="x86_64-linux")
    assert found.extra_dirs == [] and found.missing == []


def test_conda_forge_layout_uses_targets_include(tmp_path):
    """conda-forge: CUDA_HOME=$CONDA_PREFIX, headers only under targets/<triple>/include (pytorch#144690)."""
    prefix = tmp_path / "env"
    _touch(prefix / "include", "zlib.h")
    targets = _touch(prefix / "targets" / "x86_64-linux" / "include", *ALL_HEADERS)
    found = cuda_env.find_cuda_headers(prefix, 12, conda_prefix=str(prefix), site_dirs=[], triple="x86_64-linux")
    assert found.extra_dirs == [targets]
    assert found.found["cublas_v2.h"] == targets and not found.missing


def test_pip_cu13_layout_fills_in_library_headers_and_skips_other_majors(tmp_path):
    home = _touch(tmp_path / "cuda" / "include", "cuda_runtime_api.h").parent
    site = tmp_path / "site-packages"
    _touch(site / "nvidia" / "cu12" / "include", *ALL_HEADERS)  # another CUDA major: never used
    cu13 = _touch(site / "nvidia" / "cu13" / "include", *ALL_HEADERS)
    found = cuda_env.find_cuda_headers(home, 13, site_dirs=[site], triple="x86_64-linux")
    assert found.found["cuda_runtime_api.h"] == home / "include"  # the toolkit's copy wins
    assert found.extra_dirs == [cu13]


def test_pip_cu12_per_library_layout(tmp_path):
    home = _touch(tmp_path / "cuda" / "include", "cuda_runtime_api.h").parent
    site = tmp_path / "site-packages"
    cublas = _touch(site / "nvidia" / "cublas" / "include", "cublas_v2.h")
    cusparse = _touch(site / "nvidia" / "cusparse" / "include", "cusparse.h")
    found = cuda_env.find_cuda_headers(home, 12, site_dirs=[site], triple="x86_64-linux")
    assert found.extra_dirs == [cublas, cusparse]
    assert found.missing == ["cusolverDn.h"]


def test_find_nvcc_honours_cuda_home_and_path(tmp_path):
    home = tmp_path / "cuda"
    nvcc = home / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\n")
    assert cuda_env.find_nvcc({"CUDA_HOME": str(home)}, which=lambda _: None)[0] == nvcc
    missing, where = cuda_env.find_nvcc({"CUDA_HOME": str(tmp_path / "nope")}, which=lambda _: "/usr/bin/nvcc")
    assert missing is None and "CUDA_HOME" in where  # a set CUDA_HOME is not silently bypassed
    assert cuda_env.find_nvcc({}, which=lambda _: None) == (None, "PATH (no CUDA_HOME set)")
    assert cuda_env.find_nvcc({}, which=lambda _: str(nvcc))[0] == nvcc


def test_cuda_home_of_follows_a_wrapper_script(tmp_path):
    real = tmp_path / "cuda-13.0" / "bin" / "nvcc"
    real.parent.mkdir(parents=True)
    real.write_text("")
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    assert cuda_env.cuda_home_of(wrapper) == tmp_path / "cuda-13.0"
    assert cuda_env.cuda_home_of(real) == tmp_path / "cuda-13.0"


def test_probe_sees_a_missing_nvcc_and_check_reports_it(tmp_path):
    tc = preflight.probe(env={"CUDA_HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")})
    assert tc.nvcc is None and tc.python == "%d.%d" % sys.version_info[:2]
    cell = FakeCell(python=tc.python)
    if tc.torch_version is None or tc.torch_cuda is None:
        pytest.skip("needs a CUDA build of torch to get as far as the nvcc check")
    cell = dataclasses.replace(cell, torch=tc.torch_version.split("+")[0], cuda=tc.torch_cuda)
    with pytest.raises(PreflightError, match=r"nvcc not found \(looked in \$CUDA_HOME/bin/nvcc"):
        preflight.check(cell, None, tc)


def test_probe_reads_a_fake_nvcc(tmp_path):
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--list-gpu-code" ]; then echo sm_80; echo sm_90; exit 0; fi\n'
        'echo "Cuda compilation tools, release 12.8, V12.8.93"\n'
    )
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    tc = preflight.probe(env={"CUDA_HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")})
    assert tc.nvcc == nvcc and tc.nvcc_version == "12.8.93" and tc.nvcc_gpu_codes == {"sm_80", "sm_90"}


@pytest.mark.parametrize("changes, found", [
    ({"nvcc_version": "12.6.85", "torch_cuda": "12.6"}, "torch's CUDA is 12.6"),
    ({"torch_version": "2.6.0+cu126"}, "torch is 2.6.0"),
])
def test_sageattn3_floors_refused_in_one_line_before_anything_else(changes, found):
    """sageattn3 needs CUDA >= 12.8 and torch >= 2.7 (matrix.toml): said first, in one line."""
    with pytest.raises(PreflightError) as info:
        preflight.check(FakeCell(), None, good_toolchain(**changes), package="sageattn3")
    message = str(info.value)
    assert "\n" not in message and found in message
    assert "sageattn3 needs CUDA >= 12.8 and torch >= 2.7" in message


def test_sageattn3_default_archs_are_the_blackwell_a_targets():
    report = preflight.check(FakeCell(), None, good_toolchain(), package="sageattn3")
    assert report.archs == ["10.0a", "10.3a", "12.0a", "12.1a"]
