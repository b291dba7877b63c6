"""Preflight of a wheel build: is this environment the cell it claims to be, and can it compile?

Runs before any compile (``python -m scripts.build`` calls it first; ``python -m scripts.preflight
--cell C`` runs it alone). Each failure is a :class:`PreflightError` whose message is one line
that names the fix. Checks, in order:

0. the package's own floors (matrix.toml ``[packages.X] min_cuda/min_torch``; sageattn3: CUDA
   >= 12.8, torch >= 2.7) against the installed torch and nvcc, before anything else;
1. the running Python, torch and torch's CUDA equal the cell's (the build tag claims them);
2. torch is a CUDA build;
3. nvcc exists (``$CUDA_HOME/bin/nvcc`` or PATH) and its CUDA major.minor equals torch's;
4. the host compilers are accepted by that nvcc (``crt/host_config.h`` caps) and by torch
   (``cpp_extension.CUDA_GCC_VERSIONS``, and the gcc floor of torch's C++ standard), and the
   C++ compiler links libstdc++ dynamically (a test link of a tiny shared object);
5. the arch list is valid for that nvcc and that torch (scripts/cuda_archs.py);
6. the CUDA runtime headers are found (scripts/cuda_env.py; conda-forge layout included).

The facts are gathered by :func:`probe` into a :class:`Toolchain`; :func:`check` judges one, so
tests hand in fake toolchains instead of installing compilers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from scripts import cuda_archs, cuda_env

__all__ = ["PreflightError", "Toolchain", "Report", "probe", "check", "resolve_cell", "run"]


class PreflightError(RuntimeError):
    """The environment cannot build the requested cell; the message says how to fix it."""


# Host compiler caps that nvcc enforces with #error (wheels-and-cuda.md §5, crt/host_config.h of
# each toolkit): highest accepted major version, keyed by the first CUDA version with that cap.
# Minor versions not read (12.1-12.3, 12.5, 12.7) take the cap of the nearest older one read.
_NVCC_GCC_MAX = [((12, 0), 12), ((12, 4), 13), ((12, 8), 14), ((13, 0), 15)]
_NVCC_CLANG_MAX = [((12, 0), 14), ((12, 4), 17), ((12, 6), 18), ((12, 8), 19), ((13, 0), 20)]
# torch requires gcc >= 9 for extensions (pytorch#120126). From 2.13 cpp_extension compiles with
# -std=c++20, whose use in torch's headers needs gcc >= 11.3 (vLLM's build docs; §3.4).
_GCC_MIN_CXX17 = (9, 0)
_GCC_MIN_CXX20 = (11, 3)
_TORCH_CXX20_FROM = (2, 13)


def _cap(table: list[tuple[tuple[int, int], int]], cuda: tuple[int, int]) -> int:
    cap = table[0][1]
    for since, value in table:
        if cuda >= since:
            cap = value
    return cap


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass
class Compiler:
    """A host compiler as found: ``role`` says who uses it (torch's C++ / nvcc's host side)."""

    role: str
    command: str
    name: str | None = None  # "gcc" | "clang"; None: not found
    version: str | None = None


@dataclass
class Toolchain:
    """Facts about the build environment (what :func:`probe` saw, or what a test fakes)."""

    python: str
    torch_version: str | None
    torch_cuda: str | None
    nvcc: Path | None
    nvcc_looked_in: str
    nvcc_version: str | None = None
    nvcc_gpu_codes: set[str] | None = None
    cuda_home: Path | None = None
    compilers: list[Compiler] = field(default_factory=list)
    # torch.utils.cpp_extension.CUDA_GCC_VERSIONS / CUDA_CLANG_VERSIONS of the running torch
    torch_gcc_bounds: Mapping[str, tuple] | None = None
    torch_clang_bounds: Mapping[str, tuple] | None = None
    torch_checks_compiler: bool = True
    headers: cuda_env.CudaHeaders | None = None
    # True when the C++ compiler links libstdc++ statically into shared objects; None: unknown
    static_libstdcxx: bool | None = None


@dataclass
class Report:
    """What a passed preflight established; scripts/build.py uses it for the compile."""

    cell_name: str
    archs: list[str]
    nvcc: Path
    nvcc_version: str
    cuda_home: Path
    include_dirs: list[Path]
    compilers: list[Compiler]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"cell      {self.cell_name}",
            f"archs     {';'.join(self.archs)}",
            f"nvcc      {self.nvcc} ({self.nvcc_version}), CUDA_HOME={self.cuda_home}",
        ]
        out += [f"compiler  {c.role}: {c.command} = {c.name} {c.version}" for c in self.compilers]
        out += [f"includes  {d} (-idirafter)" for d in self.include_dirs]
        out += [f"note      {n}" for n in self.notes]
        return out


def probe(env: Mapping[str, str] | None = None) -> Toolchain:
    """Gather the facts of the running environment (imports torch, runs nvcc and compilers)."""
    env = os.environ if env is None else env
    python = "%d.%d" % sys.version_info[:2]
    try:
        import torch
        import torch.utils.cpp_extension as cpp_extension
    except ImportError:
        torch_version = torch_cuda = None
        gcc_bounds = clang_bounds = None
    else:
        torch_version, torch_cuda = torch.__version__, torch.version.cuda
        gcc_bounds = getattr(cpp_extension, "CUDA_GCC_VERSIONS", None)
        clang_bounds = getattr(cpp_extension, "CUDA_CLANG_VERSIONS", None)
    nvcc, looked_in = cuda_env.find_nvcc(env)
    toolchain = Toolchain(python=python, torch_version=torch_version, torch_cuda=torch_cuda,
                          nvcc=nvcc, nvcc_looked_in=looked_in,
                          torch_gcc_bounds=gcc_bounds, torch_clang_bounds=clang_bounds,
                          torch_checks_compiler=env.get("TORCH_DONT_CHECK_COMPILER_ABI", "").upper()
                          not in ("ON", "1", "YES", "TRUE", "Y"))
    if nvcc is not None:
        toolchain.nvcc_version = cuda_env.nvcc_version(nvcc)
        toolchain.nvcc_gpu_codes = cuda_env.nvcc_gpu_codes(nvcc)
        toolchain.cuda_home = Path(env["CUDA_HOME"]) if env.get("CUDA_HOME") else cuda_env.cuda_home_of(nvcc)
    # torch's cpp_extension compiles .cpp files with $CXX (default c++); nvcc's host compiler is
    # the -ccbin torch passes ($CC) or, without it, gcc from PATH.
    roles = [("C++ (torch cpp_extension)", env.get("CXX") or "c++"), ("nvcc host", env.get("CC") or "gcc")]
    for role, command in roles:
        found = cuda_env.compiler_version(command)
        toolchain.compilers.append(Compiler(role, command, *(found or (None, None))))
    if toolchain.compilers[0].name is not None:
        with tempfile.TemporaryDirectory(prefix="sageattn-preflight-") as tmp:
            toolchain.static_libstdcxx = cuda_env.links_libstdcxx_statically(roles[0][1], Path(tmp))
    if toolchain.cuda_home is not None and torch_cuda:
        major = cuda_archs.parse_version(torch_cuda)[0]
        toolchain.headers = cuda_env.find_cuda_headers(toolchain.cuda_home, major,
                                                       conda_prefix=env.get("CONDA_PREFIX"))
    return toolchain


def check(cell, archs: list[str] | None, tc: Toolchain, package: str = "sageattention") -> Report:
    """Judge toolchain ``tc`` for building ``package`` of ``cell`` (a scripts.matrix Cell).

    ``archs`` None means the package's default list for the cell's CUDA. Raises
    :class:`PreflightError` at the first problem.
    """
    if package not in cell.packages:
        raise PreflightError(
            f"cell {cell.name} does not build package {package!r} (it builds {', '.join(cell.packages)}): "
            "pick another --package or cell"
        )
    _check_package_floors(package, tc)
    how_to_get = f"use the cell's environment (`pixi run -e {cell.name} build`) or a venv with its pins"
    if tc.python != cell.python:
        raise PreflightError(f"Python {tc.python} is running but cell {cell.name} needs Python {cell.python}: {how_to_get}")
    if tc.torch_version is None:
        raise PreflightError(f"torch is not importable: install torch=={cell.torch} built for CUDA {cell.cuda} ({how_to_get})")
    torch_release = tc.torch_version.split("+")[0]
    if torch_release != cell.torch:
        raise PreflightError(
            f"torch {tc.torch_version} is installed but cell {cell.name} needs torch {cell.torch}: "
            f"install torch=={cell.torch} built for CUDA {cell.cuda} ({how_to_get})"
        )
    if tc.torch_cuda is None:
        raise PreflightError(
            f"torch {tc.torch_version} is a CPU-only build (torch.version.cuda is None): "
            f"install the CUDA {cell.cuda} build of torch {cell.torch}"
        )
    torch_cuda = cuda_archs.parse_version(tc.torch_cuda)
    if torch_cuda != cuda_archs.parse_version(cell.cuda):
        raise PreflightError(
            f"torch {tc.torch_version} was built with CUDA {tc.torch_cuda} but cell {cell.name} needs CUDA "
            f"{cell.cuda}: install torch {cell.torch} from the {cell.cuda_tag} index"
        )
    if tc.nvcc is None:
        raise PreflightError(
            f"nvcc not found (looked in {tc.nvcc_looked_in}): install the CUDA {cell.cuda} compiler "
            f"(conda-forge cuda-nvcc={cell.cuda}, or NVIDIA's toolkit) and set CUDA_HOME to it"
        )
    if tc.nvcc_version is None:
        raise PreflightError(f"`{tc.nvcc} --version` printed no CUDA release: check that nvcc runs")
    nvcc_cuda = cuda_archs.parse_version(tc.nvcc_version)
    if nvcc_cuda != torch_cuda:
        raise PreflightError(
            f"nvcc {tc.nvcc} is CUDA {tc.nvcc_version} but torch {tc.torch_version} was built with CUDA "
            f"{tc.torch_cuda}: set CUDA_HOME to a CUDA {tc.torch_cuda} toolkit (major.minor must match)"
        )
    compilers = [_check_compiler(c, nvcc_cuda, tc, cell) for c in tc.compilers]
    if tc.static_libstdcxx:
        command = tc.compilers[0].command if tc.compilers else "$CXX"
        raise PreflightError(
            f"`{command} -shared` links libstdc++ statically; next to torch's libstdc++ such an extension "
            "segfaults on its first formatted TORCH_CHECK message: set CXX and CC to a g++/gcc that links "
            "it dynamically (e.g. CXX=/usr/bin/g++ CC=/usr/bin/gcc)"
        )

    nvcc_text = "%d.%d" % nvcc_cuda
    try:
        if archs is None:
            archs = cuda_archs.default_arch_list(nvcc_text, package, torch_release)
        archs = cuda_archs.validate_arch_list(archs, nvcc_text, torch_release)
    except ValueError as exc:
        raise PreflightError(f"{exc} (arch list from --archs or TORCH_CUDA_ARCH_LIST)") from None
    if tc.nvcc_gpu_codes:
        for arch in archs:
            base = cuda_archs.arch_to_sm(arch).rstrip("af")
            if base not in tc.nvcc_gpu_codes:
                raise PreflightError(
                    f"arch {arch}: this nvcc ({tc.nvcc_version}) does not list {base} in --list-gpu-code: "
                    "remove it from the arch list or install a newer nvcc"
                )

    notes: list[str] = []
    include_dirs: list[Path] = []
    if tc.headers is not None:
        if "cuda_runtime_api.h" in tc.headers.missing:
            raise PreflightError(
                f"cuda_runtime_api.h not found under {tc.cuda_home}/include, its targets/ tree, $CONDA_PREFIX/targets "
                "or pip's nvidia packages: install the CUDA runtime headers (conda-forge cuda-cudart-dev)"
            )
        include_dirs = list(tc.headers.extra_dirs)
        if tc.headers.missing:
            notes.append(
                f"headers not found: {', '.join(tc.headers.missing)} (torch's ATen/cuda/CUDAContext.h needs them; "
                "our sources do not include it yet): install libcublas-dev/libcusparse-dev/libcusolver-dev"
            )
    return Report(cell_name=cell.name, archs=list(archs), nvcc=tc.nvcc, nvcc_version=tc.nvcc_version,
                  cuda_home=tc.cuda_home or tc.nvcc.parent.parent, include_dirs=include_dirs,
                  compilers=compilers, notes=notes)


def _package_floors(package: str) -> tuple[str, str] | None:
    """``(min_cuda, min_torch)`` of ``package`` from matrix.toml; None for an unknown package."""
    from scripts.matrix import load_matrix

    info = load_matrix().packages.get(package)
    return (info.min_cuda, info.min_torch) if info is not None else None


def _check_package_floors(package: str, tc: Toolchain) -> None:
    """One line, before any compile, when the installed torch or nvcc is older than the package allows."""
    floors = _package_floors(package)
    if floors is None:
        return
    min_cuda, min_torch = (cuda_archs.parse_version(v) for v in floors)
    why = {"sageattn3": " (NVFP4 block-scaled MMA needs sm_100a/sm_120a; torch < 2.7 knows no arch 12.0)"}.get(package, "")
    found = [("torch", tc.torch_version, min_torch), ("torch's CUDA", tc.torch_cuda, min_cuda),
             ("nvcc's CUDA", tc.nvcc_version, min_cuda)]
    for what, have, need in found:
        if have and cuda_archs.parse_version(have) < need:
            raise PreflightError(
                f"{package} needs CUDA >= {floors[0]} and torch >= {floors[1]}{why}, but {what} is {have}: "
                f"use a cell with CUDA >= {floors[0]} and torch >= {floors[1]} (`python -m scripts.matrix list "
                f"--profile {'sage3-all' if package == 'sageattn3' else 'sage2-all'}`)"
            )


def _check_compiler(compiler: Compiler, nvcc_cuda: tuple[int, int], tc: Toolchain, cell) -> Compiler:
    if compiler.name is None or compiler.version is None:
        raise PreflightError(
            f"host compiler `{compiler.command}` ({compiler.role}) not found: install g++ "
            f"<= {_cap(_NVCC_GCC_MAX, nvcc_cuda)} (conda-forge gxx) or set CXX/CC to one"
        )
    version = _version_tuple(compiler.version)
    nvcc_text = "%d.%d" % nvcc_cuda
    table = _NVCC_CLANG_MAX if compiler.name == "clang" else _NVCC_GCC_MAX
    cap = _cap(table, nvcc_cuda)
    if version[0] > cap:
        raise PreflightError(
            f"{compiler.name} {compiler.version} (`{compiler.command}`, {compiler.role}) is newer than nvcc "
            f"{nvcc_text} accepts ({compiler.name} <= {cap}, crt/host_config.h): set CXX and CC to "
            f"{compiler.name} <= {cap} (e.g. conda-forge gxx={cap})"
        )
    bounds = tc.torch_clang_bounds if compiler.name == "clang" else tc.torch_gcc_bounds
    if tc.torch_checks_compiler and bounds and nvcc_text in bounds:
        low, high_excl = bounds[nvcc_text]
        if not (tuple(low) <= version < tuple(high_excl)):
            raise PreflightError(
                f"torch {tc.torch_version} rejects {compiler.name} {compiler.version} with CUDA {nvcc_text} "
                f"(its cpp_extension allows >= {'.'.join(map(str, low))}, < {'.'.join(map(str, high_excl))}): "
                f"use a {compiler.name} in that range (set CXX and CC)"
            )
    if compiler.name == "gcc":
        torch_minor = cuda_archs.parse_version(cell.torch)
        floor = _GCC_MIN_CXX20 if torch_minor >= _TORCH_CXX20_FROM else _GCC_MIN_CXX17
        if version[:2] < floor:
            raise PreflightError(
                f"gcc {compiler.version} (`{compiler.command}`) is too old for torch {cell.torch}'s headers "
                f"(needs gcc >= {'.'.join(map(str, floor))}): set CXX and CC to a newer gcc"
            )
    return compiler


def resolve_cell(name: str | None, env: Mapping[str, str] | None = None, matrix=None):
    """The cell named by ``--cell`` or, inside pixi, ``$PIXI_ENVIRONMENT_NAME``."""
    env = os.environ if env is None else env
    name = name or env.get("PIXI_ENVIRONMENT_NAME")
    if not name or name == "default":
        raise PreflightError(
            "no cell given: pass --cell NAME (see `python -m scripts.matrix`) or run "
            "`pixi run -e CELL build`"
        )
    if matrix is None:
        from scripts.matrix import load_matrix

        matrix = load_matrix()
    try:
        return matrix.cell(name)
    except KeyError as exc:
        raise PreflightError(str(exc.args[0]) if exc.args else f"unknown cell {name!r}") from None


def run(cell_name: str | None, archs: list[str] | None, package: str = "sageattention") -> Report:
    """Resolve the cell, probe this environment and check it (what scripts/build.py calls)."""
    cell = resolve_cell(cell_name)
    return check(cell, archs, probe(), package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that this environment can build a matrix cell.")
    parser.add_argument("--cell", help="matrix cell (default: $PIXI_ENVIRONMENT_NAME)")
    parser.add_argument("--package", default="sageattention", choices=["sageattention", "sageattn3"])
    parser.add_argument("--archs", help="arch list, e.g. '8.0;9.0a' (default: $TORCH_CUDA_ARCH_LIST or the cell's)")
    args = parser.parse_args(argv)
    archs_text = args.archs or os.environ.get("TORCH_CUDA_ARCH_LIST")
    try:
        archs = cuda_archs.parse_arch_list(archs_text) if archs_text else None
        report = run(args.cell, archs, args.package)
    except (PreflightError, cuda_archs.ArchError) as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(f"preflight: {line}")
    print("preflight: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
