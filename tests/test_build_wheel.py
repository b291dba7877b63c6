"""The real build: this venv's cell, one arch, through ``python -m scripts.build``; then a fresh venv.

Marker ``build``. Skips without nvcc, unless ``SAGEATTN_REQUIRE_BUILD_TEST=1`` (CI sets it), in
which case a missing toolchain fails. The build output is streamed to the terminal (also under
pytest's capture) so the CI log shows the compile, the retagged name and the verification.

The fresh venv sees the build venv's torch through a ``.pth`` file (no 5 GB reinstall); the
wheel itself is installed there, and imported from a directory outside the repo.

Also here, unmarked: the flag choices of setup.py (C++ standard, fast math, compression).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import BUILT_WHEEL
from scripts.matrix import load_matrix
from scripts.wheel_verify import Expected, verify_wheel

from _wheel_build import build_prerequisites, install_in_fresh_venv, load_root_setup, run_probe

REPO = Path(__file__).resolve().parent.parent
BUILD_ARCHS = "8.0"  # one arch keeps the CI compile short; the full list is built by `pixi run build`


# ---- setup.py flag choices (fast, no compiler needed) ---------------------------------------


def test_no_hard_coded_cxx_standard():
    """cpp_extension picks -std (c++17 before torch 2.13, c++20 after); torch 2.14 headers need 20."""
    setup = load_root_setup()
    for flags in (setup.cxx_flags(), setup.nvcc_flags((12, 6)), setup.nvcc_flags((13, 0))):
        assert not [f for f in flags if f.startswith(("-std", "--std"))]


def test_torch_cpp_extension_supplies_the_standard_it_needs():
    """The standard that replaces ours: the installed torch's cpp_extension must add one itself."""
    torch = pytest.importorskip("torch")
    from torch.utils import cpp_extension

    source = Path(cpp_extension.__file__).read_text()
    minor = tuple(int(p) for p in torch.__version__.split(".")[:2])
    expected = "c++20" if minor >= (2, 13) else "c++17"
    assert f"-std={expected}" in source or f"'{expected}'" in source


def test_nvcc_flags_compress_and_avoid_fast_math():
    setup = load_root_setup()
    assert "--use_fast_math" not in setup.nvcc_flags((13, 0))
    assert "-Xfatbin=-compress-all" in setup.nvcc_flags((12, 6))
    assert "--compress-mode=size" in setup.nvcc_flags((12, 8))
    assert "--compress-mode=size" not in setup.nvcc_flags((12, 6))  # nvcc < 12.8 has no such option
    assert not [f for f in setup.nvcc_flags((13, 0)) if "arch" in f], "torch would drop its arch flags"


def test_link_strips_the_symbol_table_for_reproducible_builds():
    assert load_root_setup().link_flags() == ["-Wl,--strip-all"]


def test_torch_pin_and_include_flags():
    setup = load_root_setup()
    assert setup.torch_requirement("2.14.1+cu130") == "torch==2.14.*"
    assert setup.torch_requirement("2.8.0") == "torch==2.8.*"
    with pytest.raises(ValueError, match="torch_version"):
        setup.torch_requirement("nightly")
    cxx, nvcc = setup.include_dir_flags(["/site/nvidia/cu13/include"])
    assert cxx == ["-idirafter", "/site/nvidia/cu13/include"]
    assert nvcc == ["-Xcompiler", "-idirafter,/site/nvidia/cu13/include"]
    with pytest.raises(ValueError, match="','"):
        setup.include_dir_flags(["/odd,path"])


def test_build_defaults_to_a_package_the_cell_builds():
    """A sageattn3-only cell (py313-torch27-cu128) must not default to sageattention (CI `all`)."""
    from scripts import build

    matrix = load_matrix()
    assert build.default_package(matrix.cell("py312-torch28-cu129")) == "sageattention"
    assert build.default_package(matrix.cell("py313-torch27-cu128")) == "sageattn3"


def test_build_without_package_builds_every_package_of_the_cell():
    """`pixi run -e <cell> build` makes sageattn3 too where matrix.toml says the cell builds it."""
    from scripts import build, preflight

    matrix = load_matrix()
    both = matrix.cell("py312-torch28-cu129")
    assert build.packages_to_build(both, None, archs_given=False) == ["sageattention", "sageattn3"]
    assert build.packages_to_build(both, "sageattn3", archs_given=True) == ["sageattn3"]
    assert build.packages_to_build(matrix.cell("py313-torch27-cu128"), None, archs_given=True) == ["sageattn3"]
    with pytest.raises(preflight.PreflightError, match="give --package with --archs"):
        build.packages_to_build(both, None, archs_given=True)


def test_build_names_nvcc_flags_from_the_environment(monkeypatch, capsys):
    """Kernel experiments reach nvcc through NVCC_APPEND_FLAGS; the build says so before anything else."""
    from scripts import build

    monkeypatch.setenv("NVCC_APPEND_FLAGS", "-DSAGEATTN_QATTN_WARP_ROWS=16")
    monkeypatch.delenv("NVCC_PREPEND_FLAGS", raising=False)
    assert build.main(["--cell", "no-such-cell"]) == 1  # stops in preflight: nothing is compiled
    err = capsys.readouterr().err
    assert "NVCC_APPEND_FLAGS='-DSAGEATTN_QATTN_WARP_ROWS=16' is set" in err
    assert "NVCC_PREPEND_FLAGS" not in err
    assert "no-such-cell" in err


# ---- the real build ---------------------------------------------------------------------------


def _stream(cmd, capsys, **kwargs) -> tuple[int, str]:
    """Run ``cmd`` and echo its output live to the real terminal (bypassing pytest's capture)."""
    lines = []
    with capsys.disabled():
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        return proc.wait(), "".join(lines)


@pytest.mark.build
def test_real_build_retag_verify_and_install_in_a_fresh_venv(tmp_path, capsys, request):
    torch, cell, site_of_torch = build_prerequisites("sageattention")

    dist = tmp_path / "dist"
    with capsys.disabled():
        print(f"\n== real build of {cell.name} for arch {BUILD_ARCHS} (python -m scripts.build)", flush=True)
    started = time.monotonic()
    code, output = _stream([sys.executable, "-m", "scripts.build", "--cell", cell.name, "--package", "sageattention", "--archs", BUILD_ARCHS,
                            "--dist-dir", str(dist)], capsys, cwd=REPO)
    seconds = time.monotonic() - started
    assert code == 0, "scripts.build failed (output above)"

    name = f"sageattention-2.2.0-{cell.build_tag}-{cell.python_tag}-{cell.python_tag}-linux_x86_64.whl"
    wheel = dist / cell.name / name
    assert wheel.is_file(), f"expected {wheel}; dist has {[p.name for p in (dist / cell.name).iterdir()]}"
    assert f"retagged -> {name}" in output and "verify: ok" in output
    report = verify_wheel(wheel, Expected("sageattention", "2.2.0", cell.build_tag, cell.torch_minor, [BUILD_ARCHS]))
    request.config.stash[BUILT_WHEEL] = wheel
    assert (dist / cell.name / "SHA256SUMS").read_text().endswith(f"  {name}\n")

    # Rebuilding the same source is byte-identical (SOURCE_DATE_EPOCH, stripped symtab), so
    # publishing it again is a no-op rather than a refused overwrite.
    with capsys.disabled():
        print(f"\n== rebuild of {cell.name} into the same dist/ (must be a no-op)", flush=True)
    code, again = _stream([sys.executable, "-m", "scripts.build", "--cell", cell.name, "--package", "sageattention", "--archs", BUILD_ARCHS,
                           "--dist-dir", str(dist)], capsys, cwd=REPO)
    assert code == 0 and "unchanged (identical file already there)" in again

    # Fresh venv: no pip, torch visible through a .pth, the wheel installed by this pip.
    venv, fresh_python = install_in_fresh_venv(wheel, tmp_path, site_of_torch)

    probe = textwrap.dedent(
        f"""
        import sys, torch
        import sageattention
        from sageattention import _build_info, _ops
        assert sageattention.__file__.startswith({str(venv)!r}), sageattention.__file__
        assert _build_info.CELL == {cell.name!r} and _build_info.TORCH_CUDA_ARCH_LIST == {BUILD_ARCHS!r}
        assert _build_info.OP_ARCHS == {{"qk_int8_sv_f16_attn": {BUILD_ARCHS!r}}}, _build_info.OP_ARCHS  # no FP8 (sm89) op for 8.0
        assert _ops.cuda_ops_available(), _ops.missing_build_reason()
        assert hasattr(torch.ops.sageattention, "quant_per_block_int8")
        q = torch.randn(1, 2, 10, 64, dtype=torch.float16)
        if torch.cuda.is_available():
            q_int8, q_scale = _ops.quant_per_block_int8(q.cuda(), 64)
            print("CUDA op ran on", torch.cuda.get_device_name(0), tuple(q_scale.shape))
        else:
            try:
                _ops.quant_per_block_int8(q, 64)
            except ValueError as exc:
                print("no GPU: clear error:", exc)
            else:
                raise SystemExit("calling the CUDA op on CPU did not raise")
        print("imported", sageattention.__file__, "built for", _build_info.CELL, "archs", _build_info.TORCH_CUDA_ARCH_LIST)
        """
    )
    done = run_probe(fresh_python, probe, tmp_path, ("PYTHONPATH", "TRITON_INTERPRET"))
    with capsys.disabled():
        print(done.stdout, end="")
        print(f"== wheel {wheel.name}: {wheel.stat().st_size} bytes, built+retagged+verified in {seconds:.0f} s")
        print("== verification: " + "; ".join(report), flush=True)
    assert done.returncode == 0, done.stdout
    assert ("clear error" in done.stdout) or ("CUDA op ran" in done.stdout)
