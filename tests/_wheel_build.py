"""Shared steps of the real-build tests (tests/test_build_wheel.py, test_build_sageattn3_wheel.py,
test_qattn_compile_archs.py): skip-or-fail when the toolchain is missing, the running cell, the
repository's setup.py as a module, and a fresh venv that sees the build venv's torch.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import cuda_env
from scripts.matrix import load_matrix

REPO = Path(__file__).resolve().parent.parent


def skip_or_fail(reason: str):
    """Skip, unless ``SAGEATTN_REQUIRE_BUILD_TEST=1`` (CI sets it): then a missing toolchain fails."""
    if os.environ.get("SAGEATTN_REQUIRE_BUILD_TEST") == "1":
        pytest.fail(f"SAGEATTN_REQUIRE_BUILD_TEST=1 but {reason}")
    pytest.skip(reason)


def load_root_setup():
    """The repository's setup.py by path (a bare ``import setup`` may find sageattention3_blackwell's)."""
    spec = importlib.util.spec_from_file_location("sageattention_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() only runs under __main__
    return module


def running_cell(package: str):
    """The matrix cell of this Python, torch and torch's CUDA that builds ``package``, or None."""
    import torch

    python = "%d.%d" % sys.version_info[:2]
    release = torch.__version__.split("+")[0]
    for cell in load_matrix().cells:
        if (cell.python, cell.torch, cell.cuda) == (python, release, torch.version.cuda) and package in cell.packages:
            return cell
    return None


def build_prerequisites(package: str):
    """``(torch, cell, site-packages of torch)`` for a real build of ``package``, else skip or fail.

    Fails when ``package`` is already installed beside torch: the fresh venv sees that directory
    through a .pth and would import the old copy instead of the wheel under test.
    """
    torch = pytest.importorskip("torch")
    if torch.version.cuda is None:
        skip_or_fail(f"torch {torch.__version__} is a CPU build")
    if cuda_env.find_nvcc()[0] is None:
        skip_or_fail("nvcc not found (CUDA_HOME, PATH)")
    cell = running_cell(package)
    if cell is None:
        skip_or_fail(f"no {package} cell matches this Python/torch {torch.__version__}/CUDA {torch.version.cuda}")
    site_of_torch = Path(torch.__file__).resolve().parent.parent
    if (site_of_torch / package).exists():
        pytest.fail(f"{package} is installed in {site_of_torch}: the fresh venv would see it through the .pth")
    return torch, cell, site_of_torch


def install_in_fresh_venv(wheel: Path, tmp_path: Path, site_of_torch: Path) -> tuple[Path, Path]:
    """A venv without pip that sees torch through a .pth (no 5 GB reinstall), ``wheel`` installed
    into it by this pip. Returns ``(venv, its python)``."""
    venv = tmp_path / "fresh-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh_python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(fresh_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, stdout=subprocess.PIPE, text=True).stdout.strip())
    (fresh_site / "build-venv-torch.pth").write_text(f"{site_of_torch}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh_python), "install", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "-q", str(wheel)], check=True)
    return venv, fresh_python


def run_probe(fresh_python: Path, probe: str, tmp_path: Path, drop_env: tuple[str, ...]):
    """Run ``probe`` with the fresh venv's python from a directory outside the repository, without
    the variables in ``drop_env``; stdout and stderr together."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    return subprocess.run([str(fresh_python), "-c", probe], cwd=outside, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def sass_text(binary: Path, arch: str | None = None) -> str:
    """``cuda_env.cuobjdump_sass``; skips when cuobjdump or nvdisasm is not found."""
    try:
        return cuda_env.cuobjdump_sass(binary, arch)
    except cuda_env.SassToolsMissing as exc:
        pytest.skip(str(exc))
