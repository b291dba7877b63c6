"""The build matrix: one cell per (python, torch, cuda) wheel build, read from ``matrix.toml``.

``matrix.toml`` is the single source; pixi.toml, the GitHub workflow and the README tables are
generated from it (``python -m scripts.matrix sync``, see ``scripts/generated.py``).

API (shared contract)::

    m = load_matrix()                       # <repo>/matrix.toml
    m.cells                                 # list[Cell], sorted by (torch, cuda, python)
    m.cell("py312-torch28-cu129")           # KeyError naming close matches
    m.profiles["sage3-all"]                 # list of cell names
    m.packages["sageattn3"].min_cuda        # "12.8"

CLI::

    python -m scripts.matrix                 # cells and profiles as tables (--json: everything)
    python -m scripts.matrix list [--profile P] [--json]
    python -m scripts.matrix show CELL [--json]
    python -m scripts.matrix sync [--check]  # regenerate (or check) the generated files
    python -m scripts.matrix ci-profile --event E --ref R [--requested P]   # for the workflow
    python -m scripts.matrix ci-build-args --profile P                      # for the workflow
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
MATRIX_PATH = REPO_ROOT / "matrix.toml"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/{cuda_tag}"

_PYTHON_RE = re.compile(r"3\.\d+\Z")
_TORCH_RE = re.compile(r"\d+\.\d+\.\d+\Z")
_CUDA_RE = re.compile(r"\d+\.\d+\Z")
_GCC_RE = re.compile(r"\d+\Z")
# Profiles scripts/matrix.py computes; matrix.toml may not define them itself.
COMPUTED_PROFILES = ("stable", "all")


class MatrixError(ValueError):
    """matrix.toml is malformed or describes a cell that cannot be built."""


class UnknownNameError(KeyError):
    """A cell or profile name that the matrix does not have; the message names close matches."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def version_key(version: str) -> tuple[int, ...]:
    """``"3.10"`` -> ``(3, 10)``: numeric order, so 3.9 < 3.10 and 2.9 < 2.10."""
    return tuple(int(part) for part in version.split("."))


def _digits(version: str) -> str:
    return version.replace(".", "")


@dataclass(frozen=True)
class PackageInfo:
    """One distributable package and the oldest torch/CUDA a cell needs to build it."""

    name: str
    version: str
    min_cuda: str
    min_torch: str
    profile: str

    def accepts(self, torch: str, cuda: str) -> bool:
        return version_key(cuda) >= version_key(self.min_cuda) and version_key(
            torch
        ) >= version_key(self.min_torch)


@dataclass(frozen=True)
class TorchRelease:
    """Facts about one torch minor: newest patch, Pythons, CUDA indexes, PyPI wheel's CUDA."""

    minor: str
    newest: str
    pythons: tuple[str, ...]
    cuda_indexes: tuple[str, ...]
    pypi_cuda: str


@dataclass(frozen=True)
class Toolchain:
    """The conda-forge compiler set used with one CUDA version (gxx = gcc major)."""

    cuda: str
    gxx: str


@dataclass(frozen=True)
class Cell:
    """One wheel build: ``Cell("py312-torch28-cu129", "3.12", "2.8.0", "12.9", (...))``."""

    name: str
    python: str
    torch: str
    cuda: str
    packages: tuple[str, ...]

    @staticmethod
    def make_name(python: str, torch: str, cuda: str) -> str:
        minor = ".".join(torch.split(".")[:2])
        return f"py{_digits(python)}-torch{_digits(minor)}-cu{_digits(cuda)}"

    @property
    def python_tag(self) -> str:
        """PEP 425 interpreter tag, ``"cp312"``."""
        return f"cp{_digits(self.python)}"

    @property
    def torch_minor(self) -> str:
        """``"2.8"`` for torch 2.8.0."""
        return ".".join(self.torch.split(".")[:2])

    @property
    def cuda_tag(self) -> str:
        """``"cu129"``: the name of PyTorch's wheel index for this CUDA."""
        return f"cu{_digits(self.cuda)}"

    @property
    def build_tag(self) -> str:
        """PEP 427 build tag: torch X.Y.Z digits + "." + CUDA digits (2.14.1, 13.0 -> 2141.130)."""
        return f"{_digits(self.torch)}.{_digits(self.cuda)}"

    @property
    def torch_index_url(self) -> str:
        return TORCH_INDEX_URL.format(cuda_tag=self.cuda_tag)


@dataclass
class Matrix:
    """The parsed matrix; build it with :func:`load_matrix`."""

    cells: list[Cell]
    profiles: dict[str, list[str]]
    packages: dict[str, PackageInfo]
    releases: dict[str, TorchRelease]
    toolchains: dict[str, Toolchain]
    path: Path

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise UnknownNameError(_unknown("cell", name, [c.name for c in self.cells]))

    def profile_cells(self, profile: str) -> list[Cell]:
        if profile not in self.profiles:
            raise UnknownNameError(_unknown("profile", profile, list(self.profiles)))
        return [self.cell(name) for name in self.profiles[profile]]

    def release(self, cell: Cell) -> TorchRelease:
        return self.releases[cell.torch_minor]

    def toolchain(self, cell: Cell) -> Toolchain:
        return self.toolchains[cell.cuda]

    def profiles_of(self, cell: Cell) -> list[str]:
        return [name for name, cells in self.profiles.items() if cell.name in cells]


def _unknown(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
    return f"unknown {kind} {name!r} in matrix.toml{hint}"


# --- loading -------------------------------------------------------------------------------------


def load_matrix(path: str | Path | None = None) -> Matrix:
    """Read and validate ``matrix.toml`` (default: the repository's).

    Raises
    ------
    MatrixError
        The file is malformed, or a cell is impossible (see the checks in ``_make_cell``).
    """
    path = Path(path) if path is not None else MATRIX_PATH
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise MatrixError(f"cannot read the matrix file {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise MatrixError(f"{path} is not valid TOML: {err}") from err
    unknown = set(data) - {"packages", "releases", "toolchains", "profiles", "group"}
    if unknown:
        raise MatrixError(f"{path}: unknown top-level table(s) {sorted(unknown)}")
    packages = _load_packages(_table(data, "packages", path))
    releases = _load_releases(_table(data, "releases", path))
    toolchains = {
        cuda: Toolchain(cuda, _field(spec, "gxx", f"[toolchains.{cuda!r}]", _GCC_RE))
        for cuda, spec in _keyed(_table(data, "toolchains", path), "toolchains", _CUDA_RE)
    }
    cells: dict[str, Cell] = {}
    for index, group in enumerate(data.get("group", [])):
        where = f"[[group]] #{index + 1}"
        for python in _str_list(group, "pythons", where, _PYTHON_RE):
            for cuda in _str_list(group, "cuda", where, _CUDA_RE):
                torch = _field(group, "torch", where, _TORCH_RE)
                cell = _make_cell(python, torch, cuda, group.get("packages"), where,
                                  packages, releases, toolchains)
                if cell.name in cells:
                    raise MatrixError(f"{where}: duplicate cell {cell.name} (listed twice)")
                cells[cell.name] = cell
    if not cells:
        raise MatrixError(f"{path}: no [[group]] defines a cell")
    ordered = sorted(
        cells.values(),
        key=lambda c: (version_key(c.torch), version_key(c.cuda), version_key(c.python)),
    )
    profiles = _compute_profiles(ordered, _table(data, "profiles", path), packages, releases)
    return Matrix(ordered, profiles, packages, releases, toolchains, path)


def _table(data: dict, key: str, path: Path) -> dict:
    value = data.get(key)
    if not isinstance(value, dict) or not value:
        raise MatrixError(f"{path}: missing or empty [{key}] table")
    return value


def _keyed(table: dict, name: str, key_pattern: re.Pattern) -> list[tuple[str, dict]]:
    """Items of a ``[name.KEY]`` table family, checking each KEY and that each value is a table."""
    for key, spec in table.items():
        if not key_pattern.match(key) or not isinstance(spec, dict):
            raise MatrixError(f"[{name}.{key!r}]: expected a table keyed like {key_pattern.pattern!r}")
    return list(table.items())


def _field(table: dict, key: str, where: str, pattern: re.Pattern | None = None) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise MatrixError(f"{where}: {key!r} must be a string, got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise MatrixError(f"{where}: {key} = {value!r} is not of the form {pattern.pattern!r}")
    return value


def _str_list(table: dict, key: str, where: str, pattern: re.Pattern) -> list[str]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise MatrixError(f"{where}: {key!r} must be a non-empty list of strings, got {value!r}")
    bad = [v for v in value if not pattern.match(v)]
    if bad:
        raise MatrixError(f"{where}: {key} has malformed entries {bad}")
    return value


def _load_packages(table: dict) -> dict[str, PackageInfo]:
    packages = {}
    for name, spec in _keyed(table, "packages", re.compile(r"[a-z][a-z0-9_-]*\Z")):
        where = f"[packages.{name}]"
        packages[name] = PackageInfo(
            name=name,
            version=_field(spec, "version", where),
            min_cuda=_field(spec, "min_cuda", where, _CUDA_RE),
            min_torch=_field(spec, "min_torch", where, _TORCH_RE),
            profile=_field(spec, "profile", where),
        )
    return packages


def _load_releases(table: dict) -> dict[str, TorchRelease]:
    releases = {}
    for minor, spec in _keyed(table, "releases", _CUDA_RE):  # same "X.Y" shape as a CUDA version
        where = f"[releases.{minor!r}]"
        newest = _field(spec, "newest", where, _TORCH_RE)
        if not newest.startswith(minor + "."):
            raise MatrixError(f"{where}: newest = {newest!r} is not a {minor} release")
        releases[minor] = TorchRelease(
            minor=minor,
            newest=newest,
            pythons=tuple(_str_list(spec, "pythons", where, _PYTHON_RE)),
            cuda_indexes=tuple(_str_list(spec, "cuda_indexes", where, _CUDA_RE)),
            pypi_cuda=_field(spec, "pypi_cuda", where, _CUDA_RE),
        )
    return releases


def _make_cell(python, torch, cuda, package_names, where, packages, releases, toolchains) -> Cell:
    name = Cell.make_name(python, torch, cuda)
    where = f"{where}, cell {name}"
    minor = ".".join(torch.split(".")[:2])
    release = releases.get(minor)
    if release is None:
        raise MatrixError(f"{where}: torch {minor} has no [releases.{minor!r}] entry")
    if cuda not in release.cuda_indexes:
        raise MatrixError(
            f"{where}: PyTorch publishes torch {minor} for CUDA {', '.join(release.cuda_indexes)}"
            f" only, not {cuda}"
        )
    if python not in release.pythons:
        raise MatrixError(
            f"{where}: torch {minor} has wheels for Python {', '.join(release.pythons)} only,"
            f" not {python}"
        )
    if cuda not in toolchains:
        raise MatrixError(f"{where}: CUDA {cuda} has no [toolchains.{cuda!r}] entry (gxx pin)")
    if package_names is None:  # every package the cell can build
        chosen = tuple(p.name for p in packages.values() if p.accepts(torch, cuda))
    else:
        if not isinstance(package_names, list) or not package_names:
            raise MatrixError(f"{where}: packages must be a non-empty list of names")
        for pkg in package_names:
            info = packages.get(pkg)
            if info is None:
                raise MatrixError(
                    f"{where}: unknown package {pkg!r} (known: {', '.join(packages)})"
                )
            if version_key(cuda) < version_key(info.min_cuda):
                raise MatrixError(
                    f"{where}: package {pkg} needs CUDA >= {info.min_cuda}"
                    f" ([packages.{pkg}].min_cuda), the cell has CUDA {cuda}"
                )
            if version_key(torch) < version_key(info.min_torch):
                raise MatrixError(
                    f"{where}: package {pkg} needs torch >= {info.min_torch}"
                    f" ([packages.{pkg}].min_torch), the cell has torch {torch}"
                )
        if len(set(package_names)) != len(package_names):
            raise MatrixError(f"{where}: packages lists a name twice: {package_names}")
        chosen = tuple(package_names)
    if not chosen:
        raise MatrixError(f"{where}: no package can be built for torch {torch} + CUDA {cuda}")
    return Cell(name, python, torch, cuda, chosen)


# --- profiles ------------------------------------------------------------------------------------


def _compute_profiles(cells, named, packages, releases) -> dict[str, list[str]]:
    """Profiles in display order: named ones, stable, per package, per torch, per Python, all.

    ``stable`` = ``default`` + ``verified`` + every cell of the newest torch minor on its PyPI
    CUDA (the build a plain ``pip install torch`` gives, on every Python that release supports).
    """
    names = [c.name for c in cells]
    profiles: dict[str, list[str]] = {}
    for profile, members in named.items():
        where = f"[profiles] {profile}"
        if profile in COMPUTED_PROFILES or _computed_name(profile, packages):
            raise MatrixError(f"{where}: this profile is computed; remove it from matrix.toml")
        if not isinstance(members, list) or not members:
            raise MatrixError(f"{where}: must be a non-empty list of cell names")
        for member in members:
            if member not in names:
                raise MatrixError(f"{where}: {_unknown('cell', member, names)}")
        profiles[profile] = [n for n in names if n in members]
    for required in ("default", "verified"):
        if required not in profiles:
            raise MatrixError(f"[profiles]: {required!r} is required")

    newest = max({c.torch_minor for c in cells}, key=version_key)
    main_line = [c.name for c in cells
                 if c.torch_minor == newest and c.cuda == releases[newest].pypi_cuda]
    if not main_line:
        raise MatrixError(f"no cell builds torch {newest} on its PyPI CUDA {releases[newest].pypi_cuda}")
    stable = set(profiles["default"]) | set(profiles["verified"]) | set(main_line)
    profiles["stable"] = [n for n in names if n in stable]
    for pkg in packages.values():
        profiles[pkg.profile] = [c.name for c in cells if pkg.name in c.packages]
    for minor in sorted({c.torch_minor for c in cells}, key=version_key):
        profiles[f"pytorch{_digits(minor)}"] = [c.name for c in cells if c.torch_minor == minor]
    for python in sorted({c.python for c in cells}, key=version_key):
        profiles[f"python{_digits(python)}"] = [c.name for c in cells if c.python == python]
    profiles["all"] = names
    return {name: members for name, members in profiles.items() if members}


def _computed_name(profile: str, packages: dict[str, PackageInfo]) -> bool:
    if profile in {p.profile for p in packages.values()}:
        return True
    return re.match(r"(pytorch|python)\d+\Z", profile) is not None


if __name__ == "__main__":  # `python -m scripts.matrix`: the CLI lives in scripts/matrix_cli.py
    from scripts.matrix_cli import main

    sys.exit(main())
