"""Find the CUDA toolchain of a build: nvcc, its version, the host compiler, CUDA headers.

Only discovery lives here (each function returns what it found, or None); judging the findings
is scripts/preflight.py's job. Every probe takes its environment as arguments so tests can hand
in fake directory trees and fake commands.

CUDA headers (pixi-conda-forge.md §3.4-3.5, pytorch#144690): torch's CUDA headers include the
cuBLAS/cuSPARSE/cuSOLVER headers, which are not always beside nvcc:

* a full toolkit (``/usr/local/cuda``): everything in ``$CUDA_HOME/include``;
* torch's PyPI wheels: ``site-packages/nvidia/cu13/include`` (CUDA 13, one directory) or
  ``site-packages/nvidia/<lib>/include`` (CUDA 12, one per library);
* conda-forge: ``$CONDA_PREFIX/targets/<triple>/include``, never symlinked into
  ``$CONDA_PREFIX/include`` (which is what ``CUDA_HOME`` points at there).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = [
    "HEADERS_TORCH_NEEDS",
    "CudaHeaders",
    "find_nvcc",
    "nvcc_version",
    "nvcc_gpu_codes",
    "compiler_version",
    "find_cuda_headers",
    "find_cuobjdump",
    "find_nvdisasm",
    "cuobjdump_sass",
    "SassToolsMissing",
    "links_libstdcxx_statically",
    "site_package_dirs",
    "target_triple",
]

# What torch's CUDA headers (ATen/cuda/CUDAContext.h) include beyond the CUDA runtime.
HEADERS_TORCH_NEEDS = ("cuda_runtime_api.h", "cublas_v2.h", "cusparse.h", "cusolverDn.h")

Which = Callable[[str], "str | None"]
Run = Callable[[Sequence[str]], str]


def _run(cmd: Sequence[str]) -> str:
    """stdout+stderr of ``cmd``; raises OSError / CalledProcessError like subprocess does."""
    done = subprocess.run(list(cmd), check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.stdout


def find_nvcc(env: Mapping[str, str] | None = None, which: Which = shutil.which) -> tuple[Path | None, str]:
    """Locate nvcc the way torch's cpp_extension will: ``$CUDA_HOME``/``$CUDA_PATH``, else PATH.

    Returns ``(path or None, where it was looked for)``; the second item is for error messages.
    """
    env = os.environ if env is None else env
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home:
            candidate = Path(home) / "bin" / "nvcc"
            return (candidate if candidate.is_file() else None), f"${var}/bin/nvcc ({candidate})"
    found = which("nvcc")
    return (Path(found) if found else None), "PATH (no CUDA_HOME set)"


def cuda_home_of(nvcc: Path) -> Path:
    """The toolkit root of an nvcc path: ``/usr/local/cuda/bin/nvcc`` → ``/usr/local/cuda``.

    Symlinks and wrapper scripts (``/usr/local/bin/nvcc`` → ``exec /usr/local/cuda-13.0/bin/nvcc``)
    are followed so the root holds ``include/`` and ``lib64/``.
    """
    resolved = nvcc.resolve()
    # A small shell wrapper (`#!/bin/sh` + `exec /usr/local/cuda-13.0/bin/nvcc "$@"`): follow it.
    try:
        with open(resolved, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        head = b""
    if head.startswith(b"#!"):
        match = re.search(r"exec\s+[\"']?(/\S+?/bin/nvcc)\b", head.decode(errors="replace"))
        if match:
            return Path(match.group(1)).resolve().parent.parent
    return resolved.parent.parent


def nvcc_version(nvcc: Path, run: Run = _run) -> str | None:
    """``"13.0.88"`` from ``nvcc --version`` (``release 13.0, V13.0.88``); None if unreadable."""
    try:
        text = run([str(nvcc), "--version"])
    except (OSError, subprocess.CalledProcessError):
        return None
    full = re.search(r"\bV(\d+\.\d+\.\d+)", text)
    if full:
        return full.group(1)
    release = re.search(r"release (\d+\.\d+)", text)
    return release.group(1) if release else None


def nvcc_gpu_codes(nvcc: Path, run: Run = _run) -> set[str] | None:
    """Real targets from ``nvcc --list-gpu-code`` (plain ``sm_XY`` only: it omits a/f variants)."""
    try:
        text = run([str(nvcc), "--list-gpu-code"])
    except (OSError, subprocess.CalledProcessError):
        return None
    codes = set(re.findall(r"\bsm_\d+[af]?\b", text))
    return codes or None


def compiler_version(command: str, run: Run = _run, which: Which = shutil.which) -> tuple[str, str] | None:
    """``("gcc", "12.2.0")`` or ``("clang", "18.1.3")`` for a compiler command; None if absent."""
    if which(command) is None:
        return None
    try:
        banner = run([command, "--version"])
        version = run([command, "-dumpfullversion", "-dumpversion"]).strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None
    name = "clang" if "clang" in banner.lower() else "gcc"
    if name == "clang":
        match = re.search(r"clang version (\d+\.\d+(?:\.\d+)?)", banner)
        version = match.group(1) if match else version
    return name, version


def target_triple(machine: str | None = None) -> str:
    """CUDA's target directory name: ``x86_64-linux`` or ``sbsa-linux`` (aarch64 servers)."""
    machine = machine or platform.machine()
    return "sbsa-linux" if machine in ("aarch64", "arm64") else f"{machine}-linux"


def site_package_dirs() -> list[Path]:
    """site-packages directories of the running interpreter (where torch's nvidia-* wheels live)."""
    dirs = []
    for entry in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        path = Path(entry)
        if path.name in ("site-packages", "dist-packages") and path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


@dataclass
class CudaHeaders:
    """Where each header of :data:`HEADERS_TORCH_NEEDS` was found.

    ``extra_dirs`` are the directories the compile needs beyond ``$CUDA_HOME/include`` (which
    cpp_extension adds itself); ``missing`` lists headers found nowhere.
    """

    found: dict[str, Path] = field(default_factory=dict)
    extra_dirs: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _pip_nvidia_include_dirs(site_dirs: Sequence[Path], cuda_major: int) -> list[Path]:
    """``nvidia/cu<major>/include`` first, then per-library ``nvidia/<lib>/include`` dirs.

    Directories of another CUDA major (``nvidia/cu12`` for a CUDA 13 build) are skipped: their
    headers would silently mix two toolkits.
    """
    dirs: list[Path] = []
    for base in site_dirs:
        nvidia = Path(base) / "nvidia"
        if not nvidia.is_dir():
            continue
        own = nvidia / f"cu{cuda_major}" / "include"
        if own.is_dir():
            dirs.append(own)
        for child in sorted(nvidia.iterdir()):
            if re.fullmatch(r"cu\d+", child.name):
                continue
            if (child / "include").is_dir():
                dirs.append(child / "include")
    return dirs


def find_cuda_headers(
    cuda_home: Path | None,
    cuda_major: int,
    *,
    conda_prefix: str | None = None,
    site_dirs: Sequence[Path] | None = None,
    triple: str | None = None,
    headers: Sequence[str] = HEADERS_TORCH_NEEDS,
) -> CudaHeaders:
    """Find each header torch's CUDA headers need, in the order a build should trust them.

    Search order: ``$CUDA_HOME/include`` (the toolkit of the nvcc in use), its
    ``targets/<triple>/include``, ``$CONDA_PREFIX/targets/<triple>/include``, then the pip
    ``nvidia`` wheels of the same CUDA major. The first directory holding a header wins; the
    build passes every winning directory except ``$CUDA_HOME/include`` as ``-idirafter``, so a
    header that the toolkit has is never shadowed by a copy from elsewhere.
    """
    triple = triple or target_triple()
    site_dirs = site_package_dirs() if site_dirs is None else list(site_dirs)
    default = Path(cuda_home) / "include" if cuda_home else None
    candidates: list[Path] = []
    if default is not None:
        candidates += [default, Path(cuda_home) / "targets" / triple / "include"]
    if conda_prefix:
        candidates.append(Path(conda_prefix) / "targets" / triple / "include")
    candidates += _pip_nvidia_include_dirs(site_dirs, cuda_major)

    result = CudaHeaders()
    for header in headers:
        home = next((d for d in candidates if (d / header).is_file()), None)
        if home is None:
            result.missing.append(header)
            continue
        result.found[header] = home
        if home != default and home not in result.extra_dirs:
            result.extra_dirs.append(home)
    return result


def find_cuobjdump(
    cuda_home: Path | None = None,
    env: Mapping[str, str] | None = None,
    which: Which = shutil.which,
    site_dirs: Sequence[Path] | None = None,
) -> Path | None:
    """cuobjdump from the toolkit, PATH, or the ``nvidia-cuda-cuobjdump`` PyPI wheel."""
    env = os.environ if env is None else env
    homes = [cuda_home] if cuda_home else []
    homes += [Path(env[var]) for var in ("CUDA_HOME", "CUDA_PATH") if env.get(var)]
    for home in homes:
        candidate = Path(home) / "bin" / "cuobjdump"
        if candidate.is_file():
            return candidate
    found = which("cuobjdump")
    if found:
        return Path(found)
    for base in site_package_dirs() if site_dirs is None else site_dirs:
        for candidate in sorted(Path(base).glob("nvidia/*/bin/cuobjdump")):
            return candidate
    return None


def find_nvdisasm(
    cuda_home: Path | None = None,
    env: Mapping[str, str] | None = None,
    which: Which = shutil.which,
    site_dirs: Sequence[Path] | None = None,
) -> Path | None:
    """nvdisasm (which ``cuobjdump -sass`` runs) from the toolkit, PATH, the ``nvidia-cuda-nvdisasm``
    PyPI wheel, or the copy Triton ships in ``triton/backends/nvidia/bin``."""
    env = os.environ if env is None else env
    homes = [cuda_home] if cuda_home else []
    homes += [Path(env[var]) for var in ("CUDA_HOME", "CUDA_PATH") if env.get(var)]
    for home in homes:
        candidate = Path(home) / "bin" / "nvdisasm"
        if candidate.is_file():
            return candidate
    found = which("nvdisasm")
    if found:
        return Path(found)
    for base in site_package_dirs() if site_dirs is None else site_dirs:
        for pattern in ("nvidia/*/bin/nvdisasm", "triton/backends/nvidia/bin/nvdisasm"):
            for candidate in sorted(Path(base).glob(pattern)):
                return candidate
    return None


class SassToolsMissing(FileNotFoundError):
    """cuobjdump or nvdisasm (which ``cuobjdump -sass`` runs) is not found."""


def cuobjdump_sass(binary: Path, arch: str | None = None) -> str:
    """``cuobjdump -sass`` of an object or shared library (only ``arch``'s cubins when given).

    cuobjdump runs nvdisasm for this, which CUDA images often lack: the one find_nvdisasm finds
    (toolkit, PyPI wheel or Triton's copy) is put first on its PATH. Raises SassToolsMissing when
    either tool is not found, RuntimeError with cuobjdump's output when it fails.
    """
    cuobjdump, nvdisasm = find_cuobjdump(), find_nvdisasm()
    if cuobjdump is None or nvdisasm is None:
        raise SassToolsMissing(f"cuobjdump -sass needs cuobjdump ({cuobjdump}) and nvdisasm ({nvdisasm})")
    env = dict(os.environ, NVDISASM_PATH=str(nvdisasm.parent),
               PATH=f"{nvdisasm.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(cuobjdump), "-sass"] + (["-arch", arch] if arch else []) + [str(binary)]
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}")
    return done.stdout


_IOSTREAM_PROBE = "#include <sstream>\nint sageattn_probe(long v) { std::ostringstream s; s << v; return (int)s.str().size(); }\n"


def links_libstdcxx_statically(cxx: str, workdir: Path, run: Run = _run) -> bool | None:
    """Whether ``cxx -shared`` leaves libstdc++ out of NEEDED (i.e. links it statically).

    A torch extension with its own static libstdc++ crashes when it formats an integer into a
    TORCH_CHECK message (seen on the lent H100's /opt/gcc wrapper). None: could not tell
    (the compiler or readelf failed).
    """
    source = Path(workdir) / "probe.cpp"
    library = Path(workdir) / "libprobe.so"
    source.write_text(_IOSTREAM_PROBE)
    readelf = shutil.which("readelf")
    if readelf is None:
        return None
    try:
        run([cxx, "-shared", "-fPIC", "-O0", str(source), "-o", str(library)])
        dynamic = run([readelf, "-d", str(library)])
    except (OSError, subprocess.CalledProcessError):
        return None
    return "libstdc++.so" not in dynamic
