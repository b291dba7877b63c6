"""Build of the ``sageattn3`` wheel with its compiled extension ``sageattn3._C`` (NVFP4 kernels).

Run through ``python -m scripts.build --package sageattn3`` (preflight, arch list, retag, verify,
dist/), which calls ``pip wheel sageattention3_blackwell --no-build-isolation``. The compiler
flags, include handling and torch pin are those of the root ``setup.py`` (loaded from there, one
source). Environment:

* ``TORCH_CUDA_ARCH_LIST`` (required; no GPU probing): Blackwell arch-specific targets only,
  ``10.0a``, ``10.3a``, ``12.0a``, ``12.1a`` (``python -m scripts.cuda_archs 13.0 --package sageattn3``).
  sm_120a/sm_121a get the hardware block-scaled FP4 MMA; sm_100a/sm_103a the software MMA
  (csrc/fp4_mma.cuh says why).
* ``SAGEATTN3_EMULATED_MMA_BUILD=1`` (dev/test only): also accept non-Blackwell archs, e.g.
  ``9.0a`` for an H100; those compile the software FP4 MMA, so the tiling, softmax, two-level P
  quantization, masking, GQA and LSE logic can be tested on a GPU we have. Recorded in
  ``sageattn3/_build_info.py``; the public API still refuses non-Blackwell GPUs.
* ``SAGEATTN3_HEAD_DIMS`` (default ``64,128``): head dims to instantiate; CI builds ``128`` only
  to keep the 2-core compile short. Inputs with a smaller head dim are zero-padded up to one.
* ``CUDA_HOME``, ``SAGEATTN_CUDA_INCLUDE_DIRS``, ``SAGEATTN_BUILD_CELL``, ``SAGEATTN_BUILD_TEMP``,
  ``MAX_JOBS``: as for the root setup.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `scripts` (arch lists, header discovery) lives in the repo root
    sys.path.insert(0, str(ROOT))
VERSION = "1.0.0"
EXTENSION_SOURCES = ["csrc/torch_bindings.cpp", "csrc/quant_nvfp4.cu", "csrc/attn_fwd.cu"]
BLACKWELL_ARCHS = ("10.0a", "10.3a", "12.0a", "12.1a")
SUPPORTED_HEAD_DIMS = (64, 128)
MIN_CUDA = (12, 8)   # sm_100a/sm_120a (matrix.toml [packages.sageattn3])
MIN_TORCH = (2, 7)   # torch 2.6's cpp_extension knows no 12.0
EMULATED_ENV = "SAGEATTN3_EMULATED_MMA_BUILD"
HEAD_DIMS_ENV = "SAGEATTN3_HEAD_DIMS"


def _root_setup():
    """The root setup.py as a module (its flag helpers; setup() only runs under __main__)."""
    spec = importlib.util.spec_from_file_location("sageattention_root_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def head_dims(text: str | None) -> list[int]:
    """``"64,128"`` → ``[64, 128]``; ValueError for anything outside :data:`SUPPORTED_HEAD_DIMS`."""
    if not text or not text.strip():
        return list(SUPPORTED_HEAD_DIMS)
    dims = sorted({int(p) for p in re.split(r"[,;\s]+", text.strip()) if p})
    bad = [d for d in dims if d not in SUPPORTED_HEAD_DIMS]
    if bad or not dims:
        raise ValueError(f"{HEAD_DIMS_ENV}={text!r}: head dims must be among {SUPPORTED_HEAD_DIMS}")
    return dims


def check_archs(archs: list[str], emulated: bool) -> None:
    """Refuse archs that would silently get no FP4 path (ValueError, one line)."""
    for arch in archs:
        base = arch.split("+")[0]
        if base in BLACKWELL_ARCHS:
            continue
        if emulated and re.match(r"^(8\.[0-9]|9\.0)a?$", base):
            continue
        if emulated:
            raise ValueError(f"arch {arch}: a {EMULATED_ENV}=1 build takes Blackwell archs or 8.x/9.0 (software MMA)")
        raise ValueError(
            f"arch {arch} is not a Blackwell arch-specific target: sageattn3 builds only "
            f"{', '.join(BLACKWELL_ARCHS)} (block-scaled FP4 needs the 'a' targets); for a test build on "
            f"another GPU set {EMULATED_ENV}=1"
        )


def macro_flags(dims: list[int]) -> list[str]:
    return [f"-DSAGEATTN3_HD{d}=1" for d in dims]


def build_info_source(cell: str, archs: str, torch_version: str, torch_cuda: str, nvcc: str,
                      dims: list[int], emulated: bool) -> str:
    """Text of ``sageattn3/_build_info.py``, which records what a wheel was built for."""
    return (
        '"""Written by setup.py at build time: what this build of sageattn3 targets."""\n\n'
        f"CELL = {cell!r}\n"
        f"VERSION = {VERSION!r}\n"
        f"TORCH = {torch_version!r}\n"
        f"CUDA = {torch_cuda!r}\n"
        f"NVCC = {nvcc!r}\n"
        f"TORCH_CUDA_ARCH_LIST = {archs!r}\n"
        f"HEAD_DIMS = {tuple(dims)!r}\n"
        f"# True: a dev/test build ({EMULATED_ENV}=1) that may hold non-Blackwell code (software FP4 MMA)\n"
        f"EMULATED_MMA_BUILD = {emulated!r}\n"
    )


def main() -> None:
    from setuptools import find_packages, setup

    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension

    from scripts.cuda_archs import ArchError, gencode_flags, parse_version, validate_arch_list

    root = _root_setup()
    archs = root.arch_list_from_env("python -m scripts.cuda_archs 13.0 --package sageattn3",
                                    "python -m scripts.build --package sageattn3")
    nvcc_release, nvcc_version = root.toolkit_release(torch, CUDA_HOME)
    if parse_version(torch.__version__) < MIN_TORCH:
        raise SystemExit(f"setup.py: sageattn3 needs torch >= 2.7 (its cpp_extension must know arch 12.0), got {torch.__version__}")
    if nvcc_release < MIN_CUDA:
        raise SystemExit(f"setup.py: sageattn3 needs CUDA >= 12.8 (sm_100a/sm_120a), nvcc is {nvcc_release[0]}.{nvcc_release[1]}")
    emulated = os.environ.get(EMULATED_ENV, "") == "1"
    try:
        arch_list = validate_arch_list(archs, "%d.%d" % nvcc_release, torch.__version__)
        check_archs(arch_list, emulated)
        dims = head_dims(os.environ.get(HEAD_DIMS_ENV))
    except (ArchError, ValueError) as exc:
        raise SystemExit(f"setup.py: {exc}") from None
    include_cxx, include_nvcc = root.include_dir_flags(root._cuda_include_dirs(CUDA_HOME))

    info = build_info_source(
        cell=os.environ.get("SAGEATTN_BUILD_CELL", "unknown (setup.py run directly)"),
        archs=";".join(arch_list),
        torch_version=torch.__version__,
        torch_cuda=torch.version.cuda,
        nvcc=nvcc_version,
        dims=dims,
        emulated=emulated,
    )

    os.chdir(HERE)  # sources are relative to this directory
    setup(
        name="sageattn3",
        version=VERSION,
        packages=find_packages(include=["sageattn3", "sageattn3.*"]),
        install_requires=[root.torch_requirement(torch.__version__)],
        ext_modules=[
            CUDAExtension(
                name="sageattn3._C",
                sources=EXTENSION_SOURCES,
                extra_link_args=root.link_flags(),
                extra_compile_args={"cxx": root.cxx_flags() + include_cxx,
                                    "nvcc": root.nvcc_flags(nvcc_release) + gencode_flags(arch_list)
                                    + macro_flags(dims) + include_nvcc},
            )
        ],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True), "build_py": root.build_py_writing_info("sageattn3", info)},
        options=root.build_dir_options("build3"),
    )


if __name__ == "__main__":
    main()
