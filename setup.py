"""Build of the ``sageattention`` wheel with its compiled extension ``sageattention._C``.

Run through ``python -m scripts.build`` (preflight, arch list, retag, verify, dist/); it calls
``pip wheel . --no-build-isolation`` so the extension compiles against the torch of the cell.
Direct use (a conda recipe's ``pip install .``) works too; it then needs:

* ``TORCH_CUDA_ARCH_LIST``: required, no GPU probing (``python -m scripts.cuda_archs 13.0``
  prints the default for a CUDA version);
* ``CUDA_HOME`` pointing at the toolkit when nvcc on PATH is a wrapper script.

Optional: ``SAGEATTN_CUDA_INCLUDE_DIRS`` (os.pathsep-separated, found by the build script),
``SAGEATTN_BUILD_CELL`` (recorded in ``sageattention/_build_info.py``), ``SAGEATTN_BUILD_TEMP``
(where setuptools puts objects and egg-info; keeps the source tree clean), ``MAX_JOBS``,
``SAGEATTN_HEAD_DIMS`` (dev switch: e.g. ``128`` compiles the attention kernels for head dim 128
only; default ``64,128``; a left-out head dim raises a clear error at call time).

Per-file archs (:data:`ARCH_GROUPS`): the attention sources are compiled only for the archs of
their family (``scripts.cuda_archs.kernel_family_archs``): the FP16-P·V kernel (``*_sm80.cu``) for
8.0/8.6/8.7, the FP8-P·V kernel (``*_sm89.cu``) for 8.9/10.x/11.0/12.x; every other source for the
whole list. An arch written ``X.Y+PTX`` also embeds PTX, which is how the sm80/sm89 kernels run on
an H100 for testing: ``--archs "8.0+PTX;8.9+PTX"`` (the driver JIT-compiles compute_80/compute_89
PTX for sm_90; machine code stays sm_80/sm_89 only, as ``scripts/wheel_verify.py`` checks).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `scripts` (arch lists, header discovery) lives beside this file
    sys.path.insert(0, str(ROOT))
VERSION = "2.2.0"
EXTENSION_SOURCES = [
    "csrc/torch_bindings.cpp",
    "csrc/fused/quant_per_block_int8.cu",
    "csrc/fused/quant_per_thread_int8.cu",
    "csrc/fused/quant_v_fp8_operand.cu",
    "csrc/fused/quant_mma_operands.cu",
]
#: Sources compiled only for the archs of one kernel family (see scripts.cuda_archs), besides the
#: generated per-head-dim instantiations of that family (scripts/generate_kernels.py).
ARCH_GROUPS = {
    "sm80": ["csrc/qattn/qk_int8_sv_f16_attn_sm80.cu"],
    "sm89": ["csrc/qattn/qk_int8_sv_f8_attn_sm89.cu"],
    "sm90": ["csrc/qattn/qk_int8_sv_f8_attn_sm90.cu"],  # wgmma: 9.0a only
}
#: The op each family registers; its arch list goes to ``_build_info.OP_ARCHS`` so ``sageattn``
#: never picks an op that has no code for the GPU at hand (an sm89-family op built for 8.9 only
#: cannot run on sm120: SASS runs only within its major version).
FAMILY_OPS = {"sm80": "qk_int8_sv_f16_attn", "sm89": "qk_int8_sv_f8_attn", "sm90": "qk_int8_sv_f8_attn_sm90"}
HEAD_DIMS = (64, 128)


def head_dims_from_env(text: str | None) -> tuple[int, ...]:
    """``SAGEATTN_HEAD_DIMS`` ("64,128", "128") -> head dims to compile; unset/empty -> all."""
    if text is None or not text.strip():
        return HEAD_DIMS
    try:
        dims = tuple(sorted({int(part) for part in re.split(r"[,;\s]+", text.strip()) if part}))
    except ValueError:
        raise ValueError(f"SAGEATTN_HEAD_DIMS must list head dims like '64,128', got {text!r}") from None
    bad = [d for d in dims if d not in HEAD_DIMS]
    if bad or not dims:
        raise ValueError(f"SAGEATTN_HEAD_DIMS may only contain {HEAD_DIMS}, got {text!r}")
    return dims


def group_sources(arch_list: list[str], head_dims: tuple[int, ...]) -> dict[str, tuple[list[str], list[str]]]:
    """family -> (sources, its arch list) for the kernel families this arch list builds."""
    from scripts.cuda_archs import kernel_family_archs
    from scripts.generate_kernels import sources as instantiations

    groups = {}
    for family, launchers in ARCH_GROUPS.items():
        archs = kernel_family_archs(arch_list, family)
        if archs:
            groups[family] = (launchers + instantiations(family, head_dims), archs)
    return groups


def torch_requirement(torch_version: str) -> str:
    """``"2.14.1+cu130"`` → ``"torch==2.14.*"``: the .so is tied to one torch minor's C++ ABI."""
    match = re.match(r"^(\d+)\.(\d+)", torch_version)
    if not match:
        raise ValueError(f"torch_version must look like X.Y.Z, got {torch_version!r}")
    return f"torch=={match.group(1)}.{match.group(2)}.*"


def nvcc_flags(nvcc_version: tuple[int, int]) -> list[str]:
    """nvcc flags for the extension, by nvcc version.

    * No ``-std``: cpp_extension adds the standard its headers need (``-std=c++17`` up to torch
      2.12, ``-std=c++20`` from 2.13; torch 2.14's ATen ``#error``s below C++20), and only when
      none is given; a hard-coded ``-std=c++17`` breaks on torch 2.14 (wheels-and-cuda.md §3.4).
    * No ``--use_fast_math``: it turns ``x / scale`` into an approximate division and flushes
      denormals, which moves values across the .5 rounding boundary of the INT8 quantizers and
      breaks bit-exactness with the reference. The quantizers use ``__f*_rn`` intrinsics anyway;
      the attention kernels will opt into fast exp2 per call site, not per build.
    * ``-Xfatbin=-compress-all`` compresses the SASS too (by default only PTX is compressed), and
      ``--compress-mode=size`` (nvcc >= 12.8) shrinks it further: −79 % installed, −37 % wheel in
      our measurement (wheels-and-cuda.md §4.4). Cost: needs a driver of the CUDA 12.4 era or newer
      on CUDA 12.x, any CUDA 13 driver.
    """
    if not isinstance(nvcc_version, tuple) or len(nvcc_version) != 2:
        raise TypeError(f"nvcc_version must be a (major, minor) tuple, got {nvcc_version!r}")
    flags = ["-O3", "-lineinfo", "-Xfatbin=-compress-all"]
    if nvcc_version >= (12, 8):
        flags.append("--compress-mode=size")
    return flags


def cxx_flags() -> list[str]:
    """Host compiler flags (no ``-std``: see :func:`nvcc_flags`).

    ``-g0`` undoes the ``-g`` that setuptools takes from Python's own CFLAGS: with it, 2.5 MB of
    the 2.7 MB ``_C`` .so built for one arch was DWARF for torch's header templates (measured,
    torch 2.14.1, gcc 12). For a debuggable local build, drop ``-g0`` here.
    """
    return ["-O3", "-g0"]


def link_flags() -> list[str]:
    """Linker flags for the extension.

    ``--strip-all`` drops the static symbol table, whose FILE entries carry nvcc's temp file names
    (``tmpxft_<pid>_...cudafe1.cpp``): with it, two builds of the same source give byte-identical
    .so files (measured: nvcc 13.0.88, gcc 12.2), so ``dist/`` can tell a rebuild of the same
    thing (no-op) from a different build (refused). Exported symbols (``PyInit__C``) stay.
    """
    return ["-Wl,--strip-all"]


def include_dir_flags(dirs: list[str]) -> tuple[list[str], list[str]]:
    """``(cxx flags, nvcc flags)`` adding ``dirs`` *after* the toolkit's own include dirs.

    ``-idirafter`` means a header the toolkit has is never shadowed by a copy from torch's pip
    ``nvidia`` wheels or conda's ``targets/`` tree; those only fill in what the toolkit lacks.
    """
    cxx: list[str] = []
    nvcc: list[str] = []
    for directory in dirs:
        if "," in directory:
            raise ValueError(f"include dir {directory!r} contains ',' which nvcc -Xcompiler would split")
        cxx += ["-idirafter", directory]
        nvcc += ["-Xcompiler", f"-idirafter,{directory}"]
    return cxx, nvcc


def _cuda_include_dirs(cuda_home: str | None) -> list[str]:
    from_env = os.environ.get("SAGEATTN_CUDA_INCLUDE_DIRS")
    if from_env is not None:
        return [d for d in from_env.split(os.pathsep) if d]
    from scripts.cuda_env import find_cuda_headers

    import torch

    major = int((torch.version.cuda or "0").split(".")[0])
    found = find_cuda_headers(Path(cuda_home) if cuda_home else None, major,
                              conda_prefix=os.environ.get("CONDA_PREFIX"))
    return [str(d) for d in found.extra_dirs]


def build_info_source(cell: str, archs: str, torch_version: str, torch_cuda: str, nvcc: str,
                      op_archs: dict[str, list[str]] | None = None) -> str:
    """Text of ``sageattention/_build_info.py``, which records what a wheel was built for.

    ``op_archs``: attention op -> the arch-list entries its sources were compiled for (read by
    ``sageattention._support.built_op_archs``).
    """
    ops = {op: ";".join(archs) for op, archs in sorted((op_archs or {}).items())}
    return (
        '"""Written by setup.py at build time: what this build of sageattention targets."""\n\n'
        f"CELL = {cell!r}\n"
        f"VERSION = {VERSION!r}\n"
        f"TORCH = {torch_version!r}\n"
        f"CUDA = {torch_cuda!r}\n"
        f"NVCC = {nvcc!r}\n"
        f"TORCH_CUDA_ARCH_LIST = {archs!r}\n"
        f"OP_ARCHS = {ops!r}\n"
    )


def arch_list_from_env(example_cmd: str, build_cmd: str) -> str:
    """``$TORCH_CUDA_ARCH_LIST``, or exit saying how to get one (builds never probe GPUs)."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if not archs:
        raise SystemExit(
            "setup.py: TORCH_CUDA_ARCH_LIST is not set. Builds never probe GPUs: use "
            f"`{build_cmd}` (which sets it) or export the list, e.g. "
            f"TORCH_CUDA_ARCH_LIST=\"$({example_cmd})\""
        )
    return archs


def toolkit_release(torch, cuda_home: str | None) -> tuple[tuple[int, int], str]:
    """``((major, minor), full version)`` of ``$CUDA_HOME/bin/nvcc``; exits without a CUDA torch
    and toolkit, or when nvcc's version cannot be read."""
    import subprocess

    if cuda_home is None or torch.version.cuda is None:
        raise SystemExit(
            f"setup.py: needs a CUDA build of torch and a CUDA toolkit (torch {torch.__version__}, "
            f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={cuda_home}); see `python -m scripts.preflight`"
        )
    nvcc_text = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], check=True,
                               stdout=subprocess.PIPE, text=True).stdout
    release = re.search(r"release (\d+)\.(\d+)", nvcc_text)
    if release is None:
        raise SystemExit(f"setup.py: cannot read the CUDA release from `nvcc --version`:\n{nvcc_text}")
    nvcc_release = (int(release.group(1)), int(release.group(2)))
    full = re.search(r"\bV(\d+\.\d+\.\d+)", nvcc_text)
    return nvcc_release, full.group(1) if full else "%d.%d" % nvcc_release


def build_py_writing_info(package: str, info: str):
    """A setuptools ``build_py`` that also writes ``<package>/_build_info.py`` (text ``info``) into
    the build tree, never into the source tree."""
    from setuptools.command.build_py import build_py

    class BuildPyWithInfo(build_py):
        def run(self) -> None:
            super().run()
            target = Path(self.build_lib) / package / "_build_info.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(info)

    return BuildPyWithInfo


def build_dir_options(build_dir_name: str) -> dict:
    """setuptools options putting objects and egg-info under ``$SAGEATTN_BUILD_TEMP`` when set."""
    build_temp = os.environ.get("SAGEATTN_BUILD_TEMP")
    if not build_temp:
        return {}
    return {"build": {"build_base": os.path.join(build_temp, build_dir_name)}, "egg_info": {"egg_base": build_temp}}


def main() -> None:
    from setuptools import find_packages, setup

    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension

    from scripts.cuda_archs import ArchError, gencode_flags, validate_arch_list

    archs = arch_list_from_env("python -m scripts.cuda_archs 13.0", "python -m scripts.build")
    nvcc_release, nvcc_version = toolkit_release(torch, CUDA_HOME)
    try:
        arch_list = validate_arch_list(archs, "%d.%d" % nvcc_release, torch.__version__)
    except ArchError as exc:
        raise SystemExit(f"setup.py: {exc}") from None
    include_cxx, include_nvcc = include_dir_flags(_cuda_include_dirs(CUDA_HOME))

    try:
        head_dims = head_dims_from_env(os.environ.get("SAGEATTN_HEAD_DIMS"))
    except ValueError as exc:
        raise SystemExit(f"setup.py: {exc}") from None
    groups = group_sources(arch_list, head_dims)
    trim_flags = [f"-DSAGEATTN_NO_HD{d}" for d in HEAD_DIMS if d not in head_dims]
    info = build_info_source(
        cell=os.environ.get("SAGEATTN_BUILD_CELL", "unknown (setup.py run directly)"),
        archs=";".join(arch_list),
        torch_version=torch.__version__,
        torch_cuda=torch.version.cuda,
        nvcc=nvcc_version,
        op_archs={FAMILY_OPS[family]: archs for family, (_, archs) in groups.items()},
    )

    class BuildExtWithArchGroups(BuildExtension):
        """Compiles each kernel family's sources with that family's ``-gencode`` flags first, then
        lets cpp_extension compile the rest (for the whole arch list) and link everything."""

        def build_extension(self, ext) -> None:
            # No -lineinfo for the attention kernels: its inlined-function names include a per-process
            # suffix for the CUDA headers' static helpers (__shfl_xor_sync, __ldg, ...) called from
            # these templates, which made two builds of one commit differ (nvcc 13.0, measured).
            nvcc_common = [f for f in ext.extra_compile_args["nvcc"]
                           if not f.startswith("-gencode") and f != "-lineinfo"]
            extra_objects = []
            for family, (sources, family_archs) in groups.items():
                args = dict(ext.extra_compile_args)
                args["nvcc"] = nvcc_common + gencode_flags(family_archs) + trim_flags
                extra_objects += self.compiler.compile(
                    sources, output_dir=self.build_temp, macros=ext.define_macros,
                    include_dirs=ext.include_dirs, debug=self.debug, extra_postargs=args,
                    depends=ext.depends,
                )
            ext.extra_objects = list(ext.extra_objects or []) + extra_objects
            super().build_extension(ext)


    setup(
        name="sageattention",
        version=VERSION,
        packages=find_packages(include=["sageattention", "sageattention.*"]),
        install_requires=[torch_requirement(torch.__version__), "triton"],
        ext_modules=[
            CUDAExtension(
                name="sageattention._C",
                sources=EXTENSION_SOURCES,
                extra_link_args=link_flags(),
                extra_compile_args={"cxx": cxx_flags() + include_cxx,
                                    "nvcc": nvcc_flags(nvcc_release) + gencode_flags(arch_list)
                                    + include_nvcc},
            )
        ],
        cmdclass={"build_ext": BuildExtWithArchGroups.with_options(use_ninja=True), "build_py": build_py_writing_info("sageattention", info)},
        options=build_dir_options("build"),
    )


if __name__ == "__main__":
    main()
