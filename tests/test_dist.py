"""dist/<cell>/ publishing (scripts/wheel_dist.py) and why one directory per cell is needed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from scripts.wheel_dist import DistError, publish, write_sha256sums
from scripts.wheel_retag import retag


def pack_demo(tmp: Path, build: str, torch_pin: str) -> Path:
    """A pure-Python ``demo-1.0`` wheel with build tag ``build`` pinning ``torch_pin``."""
    root = tmp / f"tree-{build}"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "__init__.py").write_text(f"BUILD = {build!r}\n")
    info = root / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: {torch_pin}\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    out = tmp / f"out-{build}"
    out.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "wheel", "pack", str(root), "-d", str(out)], check=True,
                   stdout=subprocess.PIPE)
    (wheel,) = out.glob("*.whl")
    return retag(wheel, build)


def sums_of(directory: Path) -> dict[str, str]:
    lines = (directory / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ") for line in lines)}


def test_publish_writes_wheel_and_sums(tmp_path):
    wheel = pack_demo(tmp_path, "2141.130", "torch==2.14.*")
    target, written = publish(wheel, tmp_path / "dist" / "py311-torch214-cu130")
    assert written and target.read_bytes() == wheel.read_bytes()
    assert sums_of(target.parent) == {wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest()}
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in target.parent.iterdir()) == ["SHA256SUMS", wheel.name], "no temp files left"


def test_publishing_the_same_file_again_is_a_no_op(tmp_path):
    wheel = pack_demo(tmp_path, "2141.130", "torch==2.14.*")
    dest = tmp_path / "dist" / "cell"
    target, _ = publish(wheel, dest)
    inode, mtime = target.stat().st_ino, target.stat().st_mtime_ns
    again, written = publish(wheel, dest)
    assert again == target and not written
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (inode, mtime)


def test_a_different_file_of_the_same_name_is_never_overwritten(tmp_path):
    first = pack_demo(tmp_path / "a", "2141.130", "torch==2.14.*")
    other = pack_demo(tmp_path / "b", "2141.130", "torch==2.13.*")  # same name, other bytes
    assert first.name == other.name and first.read_bytes() != other.read_bytes()
    dest = tmp_path / "dist" / "cell"
    target, _ = publish(first, dest)
    with pytest.raises(DistError, match="already exists with different contents"):
        publish(other, dest)
    assert target.read_bytes() == first.read_bytes()
    assert sums_of(dest) == {first.name: hashlib.sha256(first.read_bytes()).hexdigest()}


def test_sums_cover_every_wheel_sorted(tmp_path):
    dest = tmp_path / "dist" / "cell"
    for build in ("280.129", "2141.130"):
        publish(pack_demo(tmp_path, build, "torch"), dest)
    names = list(sums_of(dest))
    assert names == sorted(names) and len(names) == 2
    write_sha256sums(dest)  # rewriting is stable
    assert list(sums_of(dest)) == names
    done = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, stdout=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stdout


def test_installers_take_the_highest_build_tag_whatever_torch_is_installed(tmp_path):
    """Why dist/ has one directory per cell (wheels-and-cuda.md §1.4-1.6).

    Two builds of one version, pinning different torch minors, in ONE find-links folder: pip
    picks by build tag alone (2141.130 > 2100.130 > 280.129), not by the installed torch.
    """
    folder = tmp_path / "mixed"
    folder.mkdir()
    for build, pin in [("280.129", "torch==2.8.*"), ("2141.130", "torch==2.14.*"), ("2100.130", "torch==2.10.*")]:
        wheel = pack_demo(tmp_path, build, pin)
        wheel.rename(folder / wheel.name)

    ranked = sorted(folder.glob("*.whl"), key=lambda p: parse_wheel_filename(p.name)[2])
    assert [parse_wheel_filename(p.name)[2] for p in ranked] == [(280, ".129"), (2100, ".130"), (2141, ".130")]

    # pip itself, offline: it downloads the highest build tag although this interpreter's torch
    # (if any) is not 2.14 necessarily; --no-deps because torch is not in the folder.
    out = tmp_path / "downloaded"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-index", "--find-links", str(folder), "--no-deps",
         "--disable-pip-version-check", "-d", str(out), "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert done.returncode == 0, done.stdout
    assert [p.name for p in out.glob("*.whl")] == ["demo-1.0-2141.130-py3-none-any.whl"]

    # One folder per cell: the same command in the 2.8 cell's folder gets the 2.8 build.
    cell_dir = tmp_path / "dist" / "py312-torch28-cu129"
    publish(folder / "demo-1.0-280.129-py3-none-any.whl", cell_dir)
    out28 = tmp_path / "downloaded28"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-index", "--find-links", str(cell_dir), "--no-deps",
         "--disable-pip-version-check", "-d", str(out28), "demo"],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert [p.name for p in out28.glob("*.whl")] == ["demo-1.0-280.129-py3-none-any.whl"]
