"""Publish verified wheels into ``dist/<cell>/``, one directory per cell, with ``SHA256SUMS``.

Why one directory per cell: pip and uv rank the wheels of one version by build tag and take the
highest, whatever torch is installed (wheels-and-cuda.md §1.4-1.6; tests/test_dist.py shows it).
So ``pip install --find-links dist/py311-torch214-cu130 sageattention`` is right only because
that folder holds nothing but that cell's builds.

Rules: never overwrite a *different* existing file (:class:`DistError`); publishing the same bytes
again is a no-op; every write is atomic (a temp file in the same directory, then a link/rename),
so a crash never leaves a half-written wheel or sums file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["DistError", "publish", "write_sha256sums", "sha256_file"]

SUMS_NAME = "SHA256SUMS"


class DistError(RuntimeError):
    """Publishing would clobber a different file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_copy(source: Path, directory: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are world-readable
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def publish(wheel: Path, directory: Path) -> tuple[Path, bool]:
    """Copy ``wheel`` into ``directory`` and refresh ``SHA256SUMS``.

    Returns ``(path in directory, True if written / False if the same file was already there)``.
    Raises :class:`DistError` if a different file of that name exists.
    """
    wheel = Path(wheel)
    directory = Path(directory)
    if not wheel.is_file():
        raise FileNotFoundError(f"wheel {wheel} does not exist")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / wheel.name
    new_sum = sha256_file(wheel)
    if target.exists():
        old_sum = sha256_file(target)
        if old_sum != new_sum:
            raise DistError(
                f"{target} already exists with different contents (sha256 {old_sum[:12]}… vs new "
                f"{new_sum[:12]}…): refusing to overwrite. Remove it if the old build is unwanted, or "
                "bump the version for a real rebuild"
            )
        write_sha256sums(directory)
        return target, False
    tmp = _temp_copy(wheel, directory)
    try:
        # os.link fails if the target appeared meanwhile (no silent clobber, unlike os.replace).
        os.link(tmp, target)
    except FileExistsError:
        raise DistError(f"{target} appeared while publishing; run again to compare") from None
    finally:
        os.unlink(tmp)
    write_sha256sums(directory)
    return target, True


def write_sha256sums(directory: Path) -> Path:
    """(Re)write ``directory/SHA256SUMS`` for every wheel there, sorted, atomically.

    The format is ``sha256sum``'s, so ``cd dist/<cell> && sha256sum -c SHA256SUMS`` checks it.
    """
    directory = Path(directory)
    lines = [f"{sha256_file(p)}  {p.name}\n" for p in sorted(directory.glob("*.whl"))]
    fd, tmp = tempfile.mkstemp(prefix=f".{SUMS_NAME}.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as out:
        out.writelines(lines)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o644)
    target = directory / SUMS_NAME
    os.replace(tmp, target)
    return target
