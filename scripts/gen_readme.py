"""Render the README's generated tables (cells, profiles) and splice them between markers.

README.md keeps hand-written prose; only the text between ``<!-- BEGIN GENERATED: NAME ... -->``
and ``<!-- END GENERATED: NAME -->`` is owned by this module.
"""

from __future__ import annotations

import re

from scripts import gen_workflow
from scripts.matrix import Matrix

README_PATH = "README.md"
SECTIONS = ("matrix-table", "profiles-table", "ci-table")


def _begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED: {name} (python -m scripts.matrix sync; do not edit) -->"


def _end(name: str) -> str:
    return f"<!-- END GENERATED: {name} -->"


def matrix_table(matrix: Matrix) -> str:
    """One Markdown row per cell: pins, wheel build tag, gcc and packages."""
    rows = [
        "| cell | Python | torch | CUDA | wheel build tag | gcc | packages |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in matrix.cells:
        rows.append(f"| `{c.name}` | {c.python} | {c.torch} | {c.cuda} | `{c.build_tag}` "
                    f"| {matrix.toolchain(c).gxx} | {', '.join(c.packages)} |")
    return "\n".join(rows)


def profiles_table(matrix: Matrix) -> str:
    """One Markdown row per profile with its cell count and cells."""
    rows = ["| profile | cells | members |", "|---|---|---|"]
    for name, members in matrix.profiles.items():
        shown = ", ".join(f"`{m}`" for m in members) if len(members) <= 8 else (
            f"`{members[0]}` … `{members[-1]}` (`python -m scripts.matrix list --profile {name}`)")
        rows.append(f"| `{name}` | {len(members)} | {shown} |")
    return "\n".join(rows)


def ci_table() -> str:
    """Which profile each GitHub event builds (scripts/gen_workflow.py TRIGGERS)."""
    rows = ["| event | profile |", "|---|---|"]
    rows += [f"| {label} | `{profile}` |" for _e, _p, profile, label in gen_workflow.TRIGGERS]
    rows.append("| manual run (`workflow_dispatch`) | the profile chosen in its form |")
    return "\n".join(rows)


def render(matrix: Matrix, readme: str) -> str:
    """``readme`` with every generated section replaced.

    Raises
    ------
    ValueError
        A section's BEGIN/END markers are missing, duplicated or out of order.
    """
    bodies = {"matrix-table": matrix_table(matrix), "profiles-table": profiles_table(matrix),
              "ci-table": ci_table()}
    for name in SECTIONS:
        begin, end = _begin(name), _end(name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        if readme.count(begin) != 1 or readme.count(end) != 1 or not pattern.search(readme):
            raise ValueError(f"README.md needs exactly one '{begin}' line followed by '{end}'")
        readme = pattern.sub(lambda _m: f"{begin}\n{bodies[name]}\n{end}", readme)
    return readme
