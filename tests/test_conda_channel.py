"""A real local conda channel: packages assembled from wheels, indexed, read back and solved.

No conda build runs here (that needs conda-forge, see scripts/conda_build.py). Instead each
package is assembled with ``rattler_build.assemble_package`` from the files of a wheel laid out
as an install would, with the name, version, build string and run requirements that the
recipe renders for the default cell's variant. The wheel is a **stand-in** built in the test from
the repository's Python sources (no CUDA extension); a second test uses a real built wheel from
``dist/<cell>/`` when one exists. The channel is indexed with ``scripts.conda_index``, its
repodata read back with py-rattler, and a solve against it (plus stand-in dependency packages)
checks that ``pytorch * cuda*`` picks a CUDA pytorch and needs ``__cuda``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info < (3, 10):  # py-rattler has no Python 3.9 wheel: the py39 cells lack it
    pytest.skip("py-rattler has no Python 3.9 wheel", allow_module_level=True)
import rattler  # noqa: E402  (everywhere else a missing tool is an error, not a skip)
import rattler_build  # noqa: E402
from rattler.package_streaming import extract as extract_package  # noqa: E402
from rattler.exceptions import SolverError  # noqa: E402

from conftest import BUILT_WHEEL  # noqa: E402
from scripts import conda_index, conda_variants, matrix  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"sageattention": REPO_ROOT / "sageattention",
           "sageattn3": REPO_ROOT / "sageattention3_blackwell" / "sageattn3"}
SUBDIR = "linux-64"


def _default_cell(mx: matrix.Matrix) -> matrix.Cell:
    return mx.cell(mx.profiles["default"][0])


def _stand_in_wheel(package: str, version: str, python_tag: str, out_dir: Path) -> Path:
    """A wheel of ``package``'s Python sources (what a wheel holds minus the CUDA extension)."""
    files = {f"{package}/{p.relative_to(SOURCES[package]).as_posix()}": p.read_bytes()
             for p in sorted(SOURCES[package].rglob("*.py"))}
    assert files, f"no Python sources for {package}"
    dist_info = f"{package}-{version}.dist-info"
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode()
    files[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: tests/test_conda_channel.py\n"
                                   f"Root-Is-Purelib: false\nTag: {python_tag}-{python_tag}-linux_x86_64\n").encode()
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{package}-{version}-{python_tag}-{python_tag}-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def _install_layout(wheel: Path, python: str, stage: Path) -> Path:
    """Lay the wheel out as pip would in a conda prefix: ``lib/pythonX.Y/site-packages``."""
    site_packages = stage / "lib" / f"python{python}" / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site_packages)
    dist_info = next(site_packages.glob("*.dist-info"))
    (dist_info / "INSTALLER").write_text("conda\n")
    return stage


def _rendered_variant(package: str, cell: matrix.Cell, mx: matrix.Matrix):
    """The recipe rendered for ``cell``'s conda variant (what rattler-build would build)."""
    variant = conda_variants.conda_variant(cell, package, mx.packages[package])
    assert isinstance(variant, conda_variants.CondaVariant), variant
    recipe = rattler_build.Stage0Recipe.from_file(str(conda_variants.RECIPES_DIR / package / "recipe.yaml"))
    config = rattler_build.RenderConfig(platform=rattler_build.PlatformConfig(target_platform=SUBDIR))
    (output,) = recipe.render(rattler_build.VariantConfig.from_yaml(conda_variants.single_variant_yaml(variant)), config)
    return variant, output.recipe.to_dict()


def _depends(variant: conda_variants.CondaVariant, run: list[str]) -> list[str]:
    """The recipe's run requirements plus the pins rattler-build adds from run_exports (python's,
    pytorch's x.x pin and cuda-nvcc's cuda-version, conda-recipes.md §3.5), written out here
    because assembling a package does not solve."""
    major, minor = (int(part) for part in variant.pytorch.split("."))
    py_major, py_minor = (int(part) for part in variant.python.split("."))
    cuda_major = int(variant.cuda.split(".")[0])
    pins = [f"python >={variant.python},<{py_major}.{py_minor + 1}.0a0",
            f"pytorch >={variant.pytorch},<{major}.{minor + 1}.0a0",
            f"cuda-version >={variant.cuda},<{cuda_major + 1}"]
    return pins + [spec for spec in run if spec != "python"]


def _assemble(package: str, wheel: Path, cell: matrix.Cell, mx: matrix.Matrix, channel: Path, stage: Path):
    variant, recipe = _rendered_variant(package, cell, mx)
    output = rattler_build.assemble_package(
        name=package,
        version=recipe["package"]["version"],
        target_platform=SUBDIR,
        build_string=recipe["build"]["string"],
        output_dir=channel / SUBDIR,
        files_dir=_install_layout(wheel, variant.python, stage),
        depends=_depends(variant, recipe["requirements"]["run"]),
        license=recipe["about"]["license"],
        summary=recipe["about"]["summary"],
        homepage=recipe["about"]["homepage"],
    )
    return Path(output.path), recipe


def _stub_package(channel: Path, subdir: str, name: str, version: str, build: str, depends: list[str], stage: Path) -> None:
    """A dependency stand-in (one marker file) so the solver has something to pick."""
    files = stage / f"{name}-{build}"
    files.mkdir(parents=True)
    (files / f"{name}.stub").write_text(f"stand-in for {name} {version} {build}\n")
    rattler_build.assemble_package(name=name, version=version, target_platform=subdir, build_string=build,
                                   output_dir=channel / subdir, files_dir=files, depends=depends)


@pytest.fixture(scope="module")
def stand_in_channel(tmp_path_factory):
    """Both packages of the default cell, assembled from stand-in wheels, indexed."""
    tmp = tmp_path_factory.mktemp("conda-channel")
    mx = matrix.load_matrix()
    cell = _default_cell(mx)
    channel, built = tmp / "channel", {}
    for package in cell.packages:
        wheel = _stand_in_wheel(package, mx.packages[package].version, cell.python_tag, tmp)
        built[package] = _assemble(package, wheel, cell, mx, channel, tmp / f"stage-{package}")
    listing = conda_index.index_channel(channel)
    return channel, built, listing, cell, mx


def test_index_lists_every_assembled_package(stand_in_channel):
    channel, built, listing, _, _ = stand_in_channel
    assert listing["noarch"] == []  # a channel must have noarch/, even empty
    assert listing[SUBDIR] == sorted(path.name for path, _ in built.values())
    for subdir in ("noarch", SUBDIR):
        assert (channel / subdir / "repodata.json").is_file()
        assert (channel / subdir / "repodata.json.zst").is_file()


def test_repodata_reads_back_with_py_rattler(stand_in_channel):
    channel, built, _, _, _ = stand_in_channel
    repodata = rattler.SparseRepoData(rattler.Channel(channel.as_uri()), SUBDIR, channel / SUBDIR / "repodata.json")
    assert sorted(repodata.package_names()) == sorted(built)
    for package, (path, recipe) in built.items():
        (record,) = repodata.load_records(rattler.PackageName(package))
        assert str(record.version) == recipe["package"]["version"]
        assert str(record.build) == recipe["build"]["string"] and str(record.build).startswith("cuda129_py312_h")
        assert "pytorch * cuda*" in [str(spec) for spec in record.depends]
        index = rattler.IndexJson.from_package_archive(path)
        assert (index.name.normalized, str(index.build), index.subdir) == (package, recipe["build"]["string"], SUBDIR)


def test_package_holds_the_wheel_files_in_site_packages(stand_in_channel, tmp_path):
    _, built, _, cell, _ = stand_in_channel
    path, _ = built["sageattention"]
    extract_package(path, tmp_path)
    site_packages = tmp_path / "lib" / f"python{cell.python}" / "site-packages"
    assert (site_packages / "sageattention" / "__init__.py").read_bytes() == (SOURCES["sageattention"] / "__init__.py").read_bytes()
    paths = json.loads((tmp_path / "info" / "paths.json").read_text())["paths"]
    assert any(p["_path"].endswith("sageattention-2.2.0.dist-info/METADATA") for p in paths)


def _solve(channels: list[Path], cuda: str | None) -> list:
    virtual = [rattler.GenericVirtualPackage(rattler.PackageName("__cuda"), rattler.Version(cuda), rattler.BuildString("0"))] if cuda else []
    return asyncio.run(rattler.solve(
        sources=[rattler.Channel(path.as_uri()) for path in channels], specs=["sageattention"],
        platforms=[SUBDIR, "noarch"], virtual_packages=virtual,
    ))


def test_channel_solves_to_a_cuda_pytorch_and_needs_cuda(stand_in_channel, tmp_path):
    """Against stand-ins of conda-forge's pytorch (a CUDA and a CPU build, the CUDA one needing
    __cuda as conda-forge's does) the solver picks the CUDA build, and fails without __cuda:
    the reason scripts/conda_build.py sets CONDA_OVERRIDE_CUDA on GPU-less machines."""
    channel, _, _, cell, _ = stand_in_channel
    deps = tmp_path / "deps"
    py = cell.python.replace(".", "")
    python_pin = f"python >={cell.python},<3.{int(cell.python.split('.')[1]) + 1}.0a0"
    _stub_package(deps, SUBDIR, "python", f"{cell.python}.0", "h0_0", [], tmp_path)
    _stub_package(deps, SUBDIR, "triton", "3.4.0", f"cuda129py{py}h0_0", [python_pin], tmp_path)
    _stub_package(deps, SUBDIR, "pytorch", cell.torch, f"cuda129_mkl_py{py}_h0_302", [python_pin, "__cuda", "triton"], tmp_path)
    _stub_package(deps, SUBDIR, "pytorch", cell.torch, f"cpu_mkl_py{py}_h0_102", [python_pin], tmp_path)
    _stub_package(deps, "noarch", "cuda-version", "12.9", "h0_3", [], tmp_path)
    conda_index.index_channel(deps)
    solved = {str(record.name.normalized): str(record.build) for record in _solve([channel, deps], "12.9")}
    assert solved["pytorch"].startswith("cuda129_") and "sageattention" in solved
    with pytest.raises(SolverError):
        _solve([channel, deps], None)


def test_index_refuses_an_empty_or_missing_channel(tmp_path, capsys):
    with pytest.raises(ValueError, match="has no <subdir>/\\*.conda"):
        conda_index.index_channel(tmp_path)
    assert conda_index.main(["--channel-dir", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_channel_from_a_built_wheel(tmp_path, request):
    """The same, from a real wheel of `python -m scripts.build` (with the CUDA extension): the one
    tests/test_build_wheel.py built in this session (CI), else the newest in dist/<cell>/."""
    mx = matrix.load_matrix()
    wheels = [request.config.stash[BUILT_WHEEL]] if BUILT_WHEEL in request.config.stash else []
    wheels = wheels or sorted((REPO_ROOT / "dist").glob("*/sageattention-*.whl"))
    if not wheels:
        pytest.skip("no built wheel: tests/test_build_wheel.py did not run and dist/<cell>/ is empty")
    wheel = wheels[-1]
    cell = mx.cell(wheel.parent.name)
    with zipfile.ZipFile(wheel) as archive:
        assert [n for n in archive.namelist() if n.startswith("sageattention/_C")], f"{wheel.name} has no compiled _C"
    variant = conda_variants.conda_variant(cell, "sageattention", mx.packages["sageattention"])
    if isinstance(variant, conda_variants.SkippedCell):
        pytest.skip(f"the built wheel's cell has no conda variant: {variant.reason}")
    path, recipe = _assemble("sageattention", wheel, cell, mx, tmp_path / "channel", tmp_path / "stage")
    listing = conda_index.index_channel(tmp_path / "channel")
    assert listing[SUBDIR] == [path.name]
    contents = rattler_build.Package.from_file(str(path))
    assert contents.build_string == recipe["build"]["string"]
