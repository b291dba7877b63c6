"""Give a built wheel its PEP 427 build tag: ``sageattention-2.2.0-2141.130-cp311-cp311-linux_x86_64.whl``.

The tag is the cell's ``build_tag`` (torch X.Y.Z digits joined, ``.``, CUDA major+minor; see
scripts/matrix.py). Retagging uses ``wheel tags --build TAG --remove`` (wheel >= 0.48), which
rewrites the file name, the ``Build:`` line of ``.dist-info/WHEEL`` and ``RECORD`` together;
renaming the file alone (flash-attn's ``sed``) leaves WHEEL disagreeing with the name
(wheels-and-cuda.md §1.7, §2.1). Zips are never edited by hand here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.utils import parse_wheel_filename

__all__ = ["RetagError", "retag", "BUILD_TAG_RE"]

# What the wheel CLI and packaging both accept (wheels-and-cuda.md §1.1): a digit, then no '-'
# and no whitespace; we also keep to [0-9A-Za-z._] so file names stay portable.
BUILD_TAG_RE = re.compile(r"^[0-9][0-9A-Za-z._]*$")
_MIN_WHEEL = (0, 48)


class RetagError(RuntimeError):
    """The wheel could not be retagged; the message names the cause."""


def _wheel_tool_version() -> tuple[int, ...]:
    try:
        text = version("wheel")
    except PackageNotFoundError:
        raise RetagError("the 'wheel' package is not installed: pip install 'wheel>=0.48'") from None
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def retag(wheel: Path, build_tag: str) -> Path:
    """Retag ``wheel`` in place (the old file is removed) and return the new path.

    Parameters
    ----------
    wheel : Path
        A ``.whl`` file, with or without a build tag.
    build_tag : str
        E.g. ``"2141.130"``; must start with a digit.
    """
    wheel = Path(wheel)
    if not BUILD_TAG_RE.match(build_tag or ""):
        raise ValueError(f"build_tag must start with a digit and use only [0-9A-Za-z._], got {build_tag!r}")
    if not wheel.is_file():
        raise FileNotFoundError(f"wheel {wheel} does not exist")
    if _wheel_tool_version() < _MIN_WHEEL:
        raise RetagError("wheel >= 0.48 is needed (`wheel tags` fixes for ZIP64 and build tags): pip install -U 'wheel>=0.48'")
    name, version, old_build, tags = parse_wheel_filename(wheel.name)
    if old_build and "%d%s" % old_build == build_tag:
        return wheel  # already carries this tag
    done = subprocess.run(
        [sys.executable, "-m", "wheel", "tags", "--remove", "--build", build_tag, wheel.name],
        cwd=wheel.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if done.returncode != 0:
        raise RetagError(f"`wheel tags --build {build_tag}` failed on {wheel.name}:\n{done.stdout.strip()}")
    new_name = done.stdout.strip().splitlines()[-1].strip() if done.stdout.strip() else ""
    new_path = wheel.parent / new_name
    if not new_name.endswith(".whl") or not new_path.is_file():
        raise RetagError(f"`wheel tags` did not report the new wheel (output: {done.stdout!r})")
    parsed = parse_wheel_filename(new_path.name)
    if "%d%s" % parsed[2] != build_tag or parsed[:2] != (name, version) or parsed[3] != tags:
        raise RetagError(f"retagged name {new_path.name} does not carry build tag {build_tag}")
    return new_path
