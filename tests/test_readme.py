"""README.md: generated tables match the matrix, the two commands lead, required sections exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts import gen_readme
from scripts import matrix as mx

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
MATRIX = mx.load_matrix()


def test_generated_tables_match_the_matrix():
    assert README == gen_readme.render(MATRIX, README), "stale: run `python -m scripts.matrix sync`"


def test_matrix_table_has_one_row_per_cell():
    rows = re.findall(r"^\| `(py\d+-torch\d+-cu\d+)` \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| `([\d.]+)`",
                      README, re.M)
    assert [r[0] for r in rows] == [c.name for c in MATRIX.cells]
    for (name, python, torch, cuda, build_tag) in rows:
        cell = MATRIX.cell(name)
        assert (python, torch, cuda, build_tag) == (cell.python, cell.torch, cell.cuda, cell.build_tag)


def test_the_two_commands_come_first():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["pixi run -e py312-torch28-cu129 build", "pixi run test"]


@pytest.mark.parametrize("heading", [
    "Without pixi: a plain venv", "The matrix", "Profiles", "Adding a cell", "Wheel names",
    "GitHub Actions", "What was executed where", "Python API", "Build script and troubleshooting",
    "Conda packages", "Benchmarks", "sageattn3",
])
def test_section_exists(heading):
    assert re.search(rf"^#+ {re.escape(heading)}", README, re.M), heading


def test_readme_says_pixi_was_not_executed():
    section = README.split("## What was executed where", 1)[1].split("\n## ", 1)[0]
    assert "pixi itself was never run" in section and "schema" in section


@pytest.mark.parametrize("damage", [
    lambda text: text.replace("<!-- END GENERATED: matrix-table -->", ""),
    lambda text: text.replace("<!-- BEGIN GENERATED: ci-table", "<!-- BEGIN: ci-table"),
    lambda text: text + "\n<!-- END GENERATED: profiles-table -->\n",
])
def test_render_refuses_broken_markers(damage):
    with pytest.raises(ValueError, match="README.md needs exactly one"):
        gen_readme.render(MATRIX, damage(README))
