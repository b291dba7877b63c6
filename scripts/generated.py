"""The files generated from matrix.toml, and ``sync`` / ``sync --check`` over all of them."""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from pathlib import Path

from scripts import gen_pixi, gen_readme, gen_workflow
from scripts.matrix import REPO_ROOT, Matrix


def expected_files(matrix: Matrix, root: Path = REPO_ROOT) -> dict[Path, str]:
    """Path -> the text it must have. The README is rendered from its current prose."""
    readme = root / gen_readme.README_PATH
    return {
        root / "pixi.toml": gen_pixi.render(matrix),
        root / gen_workflow.WORKFLOW_PATH: gen_workflow.render(matrix),
        readme: gen_readme.render(matrix, readme.read_text(encoding="utf-8")),
    }


def stale_files(matrix: Matrix, root: Path = REPO_ROOT) -> dict[Path, str]:
    """The generated files whose content differs from what the matrix gives, with a diff each."""
    stale = {}
    for path, text in expected_files(matrix, root).items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            rel = path.relative_to(root).as_posix()
            stale[path] = "".join(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                f"{rel} (on disk)", f"{rel} (from matrix.toml)"))
    return stale


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates 0600 files: keep the old file's mode, else the usual 0644.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def sync(matrix: Matrix, check: bool = False, root: Path = REPO_ROOT) -> int:
    """Rewrite stale generated files (or, with ``check``, print their diffs). Exit status."""
    stale = stale_files(matrix, root)
    if check:
        for diff in stale.values():
            sys.stdout.write(diff)
        if stale:
            names = ", ".join(p.relative_to(root).as_posix() for p in stale)
            print(f"stale: {names}; run `python -m scripts.matrix sync`", file=sys.stderr)
            return 1
        print("generated files are up to date with matrix.toml")
        return 0
    expected = expected_files(matrix, root)
    for path in stale:
        _write_atomic(path, expected[path])
        print(f"wrote {path.relative_to(root).as_posix()}")
    if not stale:
        print("generated files are up to date with matrix.toml")
    return 0
