"""Index a local conda channel (default ``dist/conda``) so pixi and conda can install from it.

Usage::

    python -m scripts.conda_index                 # dist/conda
    python -m scripts.conda_index --channel-dir /some/channel

pixi task: ``index``. Writes ``<subdir>/repodata.json`` (+ ``.zst`` and sharded repodata) for
every platform folder with py-rattler's ``index_fs`` (conda-recipes.md §5.2; ``conda index``
needs a conda installation, ``rattler-index`` is not on PyPI), then reads each repodata back
and prints what the channel offers. Consumers point at it with an absolute ``file://`` URL
(README "Conda packages").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

__all__ = ["PACKAGE_SUFFIXES", "index_channel", "read_channel", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHANNEL_DIR = REPO_ROOT / "dist" / "conda"
PACKAGE_SUFFIXES = (".conda", ".tar.bz2")


def _package_files(channel_dir: Path) -> list[Path]:
    return sorted(p for p in channel_dir.glob("*/*") if p.is_file() and p.name.endswith(PACKAGE_SUFFIXES))


def index_channel(channel_dir: Path | str) -> dict[str, list[str]]:
    """Index ``channel_dir`` in place and return ``{subdir: [package file names]}`` read back
    from the repodata written.

    Raises
    ------
    ValueError
        If ``channel_dir`` does not exist or holds no ``<subdir>/*.conda`` / ``*.tar.bz2``, or
        py-rattler is not installed.
    """
    channel_dir = Path(channel_dir).resolve()
    if not channel_dir.is_dir():
        raise ValueError(f"channel_dir {channel_dir} does not exist: build packages first (python -m scripts.conda_build)")
    if not _package_files(channel_dir):
        raise ValueError(f"channel_dir {channel_dir} has no <subdir>/*.conda or *.tar.bz2 packages to index")
    try:
        from rattler.index import index_fs  # imported here: --help works without py-rattler
    except ImportError as exc:
        raise ValueError(f"indexing needs py-rattler ({exc}): pip install 'py-rattler>=0.28' (Python >= 3.10)") from None
    # A conda channel must have noarch/ even when every package is linux-64 (conda-index docs).
    (channel_dir / "noarch").mkdir(exist_ok=True)
    # force: rewrite from the packages present, so a removed package leaves the index too.
    asyncio.run(index_fs(channel_dir, force=True))
    return read_channel(channel_dir)


def read_channel(channel_dir: Path | str) -> dict[str, list[str]]:
    """``{subdir: sorted package file names}`` from each ``<subdir>/repodata.json``."""
    channel_dir = Path(channel_dir)
    listing: dict[str, list[str]] = {}
    for repodata_path in sorted(channel_dir.glob("*/repodata.json")):
        repodata = json.loads(repodata_path.read_text())
        names = list(repodata.get("packages", {})) + list(repodata.get("packages.conda", {}))
        listing[repodata_path.parent.name] = sorted(names)
    return listing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channel-dir", type=Path, default=DEFAULT_CHANNEL_DIR, help="default: dist/conda")
    args = parser.parse_args(argv)
    try:
        listing = index_channel(args.channel_dir)
    except ValueError as error:
        print(f"conda_index: {error}")
        return 1
    for subdir, names in listing.items():
        print(f"{subdir}: {len(names)} package(s)")
        for name in names:
            print(f"  {name}")
    print(f"channel: file://{Path(args.channel_dir).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
