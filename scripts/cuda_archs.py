"""CUDA architecture lists per nvcc version, and validation of a user's ``TORCH_CUDA_ARCH_LIST``.

Every list here is computed from facts about the toolchains (../shared/research/wheels-and-cuda.md
§4.1 for nvcc, §4.3 and pixi-conda-forge.md §3.5 for torch's ``cpp_extension``), never probed
from a GPU: a wheel build must give the same result on any machine (STYLE.md H6).

Arch strings use ``TORCH_CUDA_ARCH_LIST`` syntax: ``"8.0"``, ``"9.0a"``, ``"12.0+PTX"``.
nvcc target names use nvcc syntax: ``"sm_80"``, ``"sm_90a"``.

Usage::

    python -m scripts.cuda_archs 13.0            # default list for sageattention
    python -m scripts.cuda_archs 12.9 --package sageattn3
"""

from __future__ import annotations

import argparse
import re
import sys

__all__ = [
    "ArchError",
    "default_arch_list",
    "nvcc_real_targets",
    "torch_accepted_archs",
    "parse_arch_list",
    "validate_arch_list",
    "arch_to_sm",
    "gencode_flags",
    "kernel_family_archs",
    "parse_version",
]


class ArchError(ValueError):
    """An arch list that the nvcc or the torch of a build cannot use."""


def parse_version(text: str, what: str = "version") -> tuple[int, int]:
    """``"12.8"`` / ``"12.8.93"`` / ``"2.14.1+cu130"`` → ``(12, 8)``; ValueError naming ``what``."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    if not match:
        raise ValueError(f"{what} must look like MAJOR.MINOR (e.g. '12.8'), got {text!r}")
    return int(match.group(1)), int(match.group(2))


# --- nvcc facts (wheels-and-cuda.md §4.1: `ptxas --help` of each toolkit's own binaries) ---------

_CUDA_12_0_TARGETS = frozenset(
    "sm_50 sm_52 sm_53 sm_60 sm_61 sm_62 sm_70 sm_72 sm_75 sm_80 sm_86 sm_87 sm_89 sm_90 sm_90a".split()
)
# 12.8 added datacenter and consumer Blackwell and the first Thor name (sm_101).
_CUDA_12_8_TARGETS = _CUDA_12_0_TARGETS | frozenset("sm_100 sm_100a sm_101 sm_101a sm_120 sm_120a".split())
# 12.9 added B300 (sm_103), DGX Spark (sm_121) and the family-specific `f` targets.
_CUDA_12_9_TARGETS = _CUDA_12_8_TARGETS | frozenset(
    "sm_100f sm_101f sm_103 sm_103a sm_103f sm_120f sm_121 sm_121a sm_121f".split()
)
# 13.0 dropped Maxwell/Pascal/Volta (nothing below sm_75), renamed Thor sm_101 -> sm_110, added sm_88.
_CUDA_13_0_TARGETS = frozenset(
    (
        "sm_75 sm_80 sm_86 sm_87 sm_88 sm_89 sm_90 sm_90a sm_100 sm_100a sm_100f sm_103 sm_103a "
        "sm_103f sm_110 sm_110a sm_110f sm_120 sm_120a sm_120f sm_121 sm_121a sm_121f"
    ).split()
)


def nvcc_real_targets(cuda: str) -> set[str]:
    """Real GPU targets (``sm_XY[a|f]``) that the nvcc of CUDA ``cuda`` can generate code for.

    Parameters
    ----------
    cuda : str
        CUDA version, ``"12.8"`` or ``"12.8.93"``.

    Notes
    -----
    Facts were read from 12.0, 12.4, 12.6, 12.8, 12.9 and 13.0 toolkits. Minor versions in
    between take the list of the nearest older one read (12.1-12.7 → 12.0's list, which 12.4
    and 12.6 are known to match). CUDA 13.1+ is assumed to keep 13.0's list (nothing read yet;
    an nvcc that lacks a target still fails loudly at compile time, and preflight checks the
    installed nvcc's own ``--list-gpu-code`` when it can).
    """
    major, minor = parse_version(cuda, "cuda")
    if (major, minor) < (12, 0):
        raise ValueError(f"cuda {cuda!r} is older than 12.0, the oldest CUDA this project builds with")
    if major >= 13:
        return set(_CUDA_13_0_TARGETS)
    if minor >= 9:
        return set(_CUDA_12_9_TARGETS)
    if minor == 8:
        return set(_CUDA_12_8_TARGETS)
    return set(_CUDA_12_0_TARGETS)


# --- torch facts: `supported_arches` of torch/utils/cpp_extension.py per release ---------------

_TORCH_2_6_ARCHS = frozenset(
    "3.5 3.7 5.0 5.2 5.3 6.0 6.1 6.2 7.0 7.2 7.5 8.0 8.6 8.7 8.9 9.0 9.0a 10.0".split()
)
# 2.7 added Blackwell (10.0a, 10.1, 10.1a, 12.0, 12.0a); 2.8 read the same in the conda-forge notes.
_TORCH_2_7_ARCHS = _TORCH_2_6_ARCHS | frozenset("10.0a 10.1 10.1a 12.0 12.0a".split())
# 2.9 followed CUDA 13's Thor rename (11.0 replaces 10.1) and added 10.3 and 12.1.
_TORCH_2_9_ARCHS = (_TORCH_2_7_ARCHS - {"10.1", "10.1a"}) | frozenset("11.0 11.0a 10.3 10.3a 12.1 12.1a".split())
# 2.14.1 (read from the installed wheel) also knows 10.7; when it appeared between 2.9 and 2.14
# was not checked, so it is only claimed for 2.14+ (we build no 10.7 code anyway).
_TORCH_2_14_ARCHS = _TORCH_2_9_ARCHS | frozenset("10.7 10.7a".split())


def torch_accepted_archs(torch_version: str) -> set[str]:
    """Arch strings (without ``+PTX``) that this torch's ``cpp_extension`` accepts.

    Anything else makes ``cpp_extension`` raise ``ValueError("Unknown CUDA arch ...")`` deep
    inside the compile; e.g. torch 2.6 has no ``12.0`` (pixi-conda-forge.md §3.5).
    """
    version = parse_version(torch_version, "torch version")
    if version >= (2, 14):
        return set(_TORCH_2_14_ARCHS)
    if version >= (2, 9):
        return set(_TORCH_2_9_ARCHS)
    if version >= (2, 7):
        return set(_TORCH_2_7_ARCHS)
    if version >= (2, 6):
        return set(_TORCH_2_6_ARCHS)
    raise ValueError(f"torch {torch_version!r} is older than 2.6, the oldest torch in the matrix")


# --- what each package builds -----------------------------------------------------------------


def default_arch_list(cuda: str, package: str = "sageattention", torch: str | None = None) -> list[str]:
    """Default ``TORCH_CUDA_ARCH_LIST`` entries for building ``package`` with CUDA ``cuda``.

    Parameters
    ----------
    cuda : str
        CUDA version of the cell (``"12.9"``).
    package : {"sageattention", "sageattn3"}
    torch : str, optional
        Torch version of the cell; when given, archs its ``cpp_extension`` does not know are
        left out (torch 2.7/2.8 know no 10.3/12.1). Nothing is lost on those GPUs: SASS for
        sm_100 runs on sm_103 and sm_120 on sm_121 (same major, newer minor), only the
        arch-specific ``a`` targets are not portable that way.

    Returns
    -------
    list of str
        Ordered arch strings, e.g. ``["8.0", "8.6", "8.9", "9.0a", "10.0", "12.0"]`` for 12.8.

    Notes
    -----
    sageattention's CUDA kernels need INT8 ``mma.sync`` at sm_80 or newer; sm_75 (Turing) GPUs run
    the Triton path only, so no sm_75 code is built. 8.6 and 8.9 get their own code, as upstream
    does: 8.9's FP8 ``mma`` path needs sm_89 code (and CUDA ≥ 12.4), and Hopper is built as
    ``9.0a`` because its WGMMA kernels only exist for the arch-specific target (CUDA ≥ 12.3).
    Blackwell 10.0/12.0 need CUDA ≥ 12.8, 10.3/12.1 CUDA ≥ 12.9. No ``+PTX``: the Python side
    dispatches by compute capability, and an unknown future GPU takes the Triton path rather
    than JIT-compiling PTX tuned for another arch.

    sageattn3 (FP4 microscaling attention) uses block-scaled MMA that only the arch-specific
    targets have: ``10.0a;12.0a``, plus ``10.3a;12.1a`` where nvcc knows them (≥ 12.9).
    """
    major_minor = parse_version(cuda, "cuda")
    targets = nvcc_real_targets(cuda)
    if package == "sageattention":
        wanted = [("8.0", (12, 0)), ("8.6", (12, 0)), ("8.9", (12, 4)), ("9.0a", (12, 3)),
                  ("10.0", (12, 8)), ("10.3", (12, 9)), ("12.0", (12, 8)), ("12.1", (12, 9))]
    elif package == "sageattn3":
        if major_minor < (12, 8):
            raise ValueError(f"package 'sageattn3' needs CUDA >= 12.8 (sm_100a/sm_120a), got cuda {cuda!r}")
        wanted = [("10.0a", (12, 8)), ("10.3a", (12, 9)), ("12.0a", (12, 8)), ("12.1a", (12, 9))]
    else:
        raise ValueError(f"package must be 'sageattention' or 'sageattn3', got {package!r}")
    archs = [arch for arch, min_cuda in wanted if major_minor >= min_cuda]
    if torch is not None:
        accepted = torch_accepted_archs(torch)
        archs = [arch for arch in archs if arch in accepted]
    missing = [arch for arch in archs if arch_to_sm(arch) not in targets]
    assert not missing, f"facts disagree: nvcc {cuda} lacks {missing}"  # internal consistency
    return archs


# --- parsing and validation of user lists --------------------------------------------------------

_ARCH_RE = re.compile(r"^(\d+)\.(\d)([af]?)(\+PTX)?$")


def parse_arch_list(text: str) -> list[str]:
    """Split a ``TORCH_CUDA_ARCH_LIST`` string (``;``, ``,`` or spaces) into arch strings.

    Raises
    ------
    ArchError
        For an empty list or an entry that is not ``MAJOR.MINOR[a|f][+PTX]`` (e.g. ``"sm_80"``,
        ``"80"`` or a named arch such as ``"Ampere"``: write ``"8.0"``).
    """
    entries = [part for part in re.split(r"[;,\s]+", text.strip()) if part]
    if not entries:
        raise ArchError("TORCH_CUDA_ARCH_LIST is empty: give archs like '8.0;9.0a'")
    for entry in entries:
        if not _ARCH_RE.match(entry):
            raise ArchError(
                f"TORCH_CUDA_ARCH_LIST entry {entry!r} is not MAJOR.MINOR[a][+PTX] "
                "(write '8.0' for sm_80, '9.0a' for sm_90a, '12.0+PTX' to add PTX)"
            )
    return entries


def arch_to_sm(arch: str) -> str:
    """``"9.0a"`` → ``"sm_90a"``, ``"12.0+PTX"`` → ``"sm_120"`` (the real target it builds)."""
    match = _ARCH_RE.match(arch)
    if not match:
        raise ArchError(f"arch {arch!r} is not MAJOR.MINOR[a|f][+PTX]")
    major, minor, suffix, _ptx = match.groups()
    return f"sm_{major}{minor}{suffix}"


def validate_arch_list(archs: list[str] | str, cuda: str, torch_version: str | None = None) -> list[str]:
    """Check every arch against nvcc ``cuda`` and (if given) ``torch_version``'s ``cpp_extension``.

    Returns the list (parsed if a string was given). Raises :class:`ArchError` whose message names
    the arch, what rejects it, and what to do.
    """
    entries = parse_arch_list(archs) if isinstance(archs, str) else list(archs)
    if not entries:
        raise ArchError("the arch list is empty: give archs like '8.0;9.0a'")
    targets = nvcc_real_targets(cuda)
    accepted = torch_accepted_archs(torch_version) if torch_version else None
    for arch in entries:
        sm = arch_to_sm(arch)
        if sm not in targets:
            raise ArchError(
                f"arch {arch} ({sm}) cannot be built by nvcc {cuda}; "
                f"nvcc {cuda} builds {_describe(targets)}. Remove it from the arch list "
                "or use a cell with a newer CUDA"
            )
        base = arch.split("+")[0]
        if accepted is not None and base not in accepted:
            raise ArchError(
                f"arch {arch} is unknown to torch {torch_version}'s cpp_extension "
                f"(it accepts {', '.join(sorted(accepted, key=_arch_sort_key))}); "
                "remove it or use a cell with a newer torch"
            )
    return entries


def gencode_flags(archs: list[str]) -> list[str]:
    """nvcc ``-gencode`` flags for arch strings: ``"9.0a"`` → ``-gencode=arch=compute_90a,code=sm_90a``.

    ``+PTX`` adds ``code=compute_XY`` (PTX that newer GPUs can JIT). setup.py passes these
    itself rather than letting cpp_extension derive them: cpp_extension drops *all* its arch
    flags as soon as any nvcc flag contains the substring "arch" (wheels-and-cuda.md §4.3),
    which an include path such as ``/opt/research/...`` would trigger silently, and per-source
    arch lists (STYLE.md H6) need explicit flags anyway.
    """
    flags: list[str] = []
    for arch in archs:
        sm = arch_to_sm(arch)
        compute = sm.replace("sm_", "compute_")
        flags.append(f"-gencode=arch={compute},code={sm}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch={compute},code={compute}")
    return flags


#: Compute capabilities each mma.sync attention kernel family is compiled for (per-file archs,
#: STYLE.md H6). "sm80": INT8 Q·Kᵀ + FP16 P·V, whose sm_80 code also runs on sm86/87/89 (same
#: major); 8.6 and 8.7 get their own code as upstream does. "sm89": FP8 e4m3 P·V, which needs
#: sm_89's FP8 mma.sync; also the FP8 path of datacenter and consumer Blackwell (10.x, 11.0,
#: 12.x; 12.x has no WGMMA). Hopper (9.0) has its own WGMMA kernels and gets neither: "sm90"
#: (wgmma.mma_async), which exists only for the arch-specific target, so only ``9.0a`` entries
#: are taken (a plain ``9.0`` would compile the kernel to a trap).
_KERNEL_FAMILY_ARCHS = {
    "sm80": ("8.0", "8.6", "8.7"),
    "sm89": ("8.9", "10.0", "10.3", "11.0", "12.0", "12.1"),
    "sm90": ("9.0",),
}


def kernel_family_archs(archs: list[str], family: str) -> list[str]:
    """The entries of ``archs`` (``+PTX``/``a``/``f`` kept) that kernel ``family`` is built for.

    ``"sm80"`` also takes ``8.9`` when the list has no other 8.x arch, so an sm89-only build still
    has the FP16-P·V kernel. Empty when the list has none of the family's archs (its sources are
    then not compiled and its op is not registered).
    """
    if family not in _KERNEL_FAMILY_ARCHS:
        raise ValueError(f"family must be one of {sorted(_KERNEL_FAMILY_ARCHS)}, got {family!r}")

    def base(arch: str) -> str:
        match = _ARCH_RE.match(arch)
        if not match:
            raise ArchError(f"arch {arch!r} is not MAJOR.MINOR[a|f][+PTX]")
        return f"{match.group(1)}.{match.group(2)}"

    chosen = [a for a in archs if base(a) in _KERNEL_FAMILY_ARCHS[family]]
    if family == "sm90":
        chosen = [a for a in chosen if _ARCH_RE.match(a).group(3) == "a"]
    if family == "sm80" and not chosen:
        chosen = [a for a in archs if base(a) == "8.9"]
    return chosen


def _arch_sort_key(arch: str) -> tuple[int, int, str]:
    match = _ARCH_RE.match(arch)
    assert match is not None
    return int(match.group(1)), int(match.group(2)), match.group(3)


def _describe(targets: set[str]) -> str:
    def key(sm: str) -> tuple[int, str]:
        digits = re.match(r"sm_(\d+)", sm)
        assert digits is not None
        return int(digits.group(1)), sm

    return " ".join(sorted(targets, key=key))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cuda", help="CUDA version, e.g. 12.9")
    parser.add_argument("--package", default="sageattention", choices=["sageattention", "sageattn3"])
    parser.add_argument("--torch", help="torch version of the cell (drops archs its cpp_extension lacks)")
    args = parser.parse_args(argv)
    try:
        archs = default_arch_list(args.cuda, args.package, args.torch)
    except ValueError as exc:  # a malformed or unsupported CUDA/torch version: one line, no traceback
        print(f"cuda_archs: {exc}", file=sys.stderr)
        return 2
    print(";".join(archs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
