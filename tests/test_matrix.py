"""matrix.toml and scripts/matrix.py: seed cells, current releases, validation, profiles, CLI.

Expected values here are written out from the project brief and the research notes, not read
back from matrix.toml, so a wrong edit of the matrix fails a test.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import matrix as mx

REPO_ROOT = Path(__file__).resolve().parent.parent
MATRIX = mx.load_matrix()
SAGE2 = ("sageattention",)
SAGE3 = ("sageattn3",)
BOTH = ("sageattention", "sageattn3")

# (name, python, torch, cuda, packages): the seed cells of the project brief.
SEED_CELLS = [
    ("py39-torch26-cu126", "3.9", "2.6.0", "12.6", SAGE2),
    ("py310-torch26-cu126", "3.10", "2.6.0", "12.6", SAGE2),
    ("py311-torch26-cu126", "3.11", "2.6.0", "12.6", SAGE2),
    ("py312-torch26-cu126", "3.12", "2.6.0", "12.6", SAGE2),
    ("py310-torch27-cu128", "3.10", "2.7.0", "12.8", BOTH),
    ("py311-torch27-cu128", "3.11", "2.7.0", "12.8", BOTH),
    ("py312-torch27-cu128", "3.12", "2.7.0", "12.8", BOTH),
    ("py313-torch27-cu128", "3.13", "2.7.0", "12.8", SAGE3),
    ("py310-torch28-cu129", "3.10", "2.8.0", "12.9", BOTH),
    ("py311-torch28-cu129", "3.11", "2.8.0", "12.9", BOTH),
    ("py312-torch28-cu129", "3.12", "2.8.0", "12.9", BOTH),
    ("py313-torch28-cu129", "3.13", "2.8.0", "12.9", SAGE3),
]
# torch minor -> (newest patch, CUDA indexes PyTorch publishes): pixi-conda-forge.md §5.
CURRENT_RELEASES = {
    "2.9": ("2.9.1", ["12.6", "12.8", "13.0"]),
    "2.10": ("2.10.0", ["12.6", "12.8", "13.0"]),
    "2.11": ("2.11.0", ["12.6", "12.8", "13.0"]),
    "2.12": ("2.12.1", ["12.6", "13.0", "13.2"]),
    "2.13": ("2.13.0", ["12.6", "13.0", "13.2"]),
    "2.14": ("2.14.1", ["12.6", "13.0", "13.2"]),
    "2.15": ("2.15.0", ["13.0", "13.2"]),
}


@pytest.mark.parametrize("name, python, torch, cuda, packages", SEED_CELLS)
def test_seed_cell_has_its_pins(name, python, torch, cuda, packages):
    cell = MATRIX.cell(name)
    assert (cell.python, cell.torch, cell.cuda, cell.packages) == (python, torch, cuda, packages)


@pytest.mark.parametrize("name, torch", [("py311-torch214-cu130", "2.14.1"),
                                         ("py312-torch211-cu130", "2.11.0")])
def test_cells_we_really_run_exist(name, torch):
    cell = MATRIX.cell(name)
    assert (cell.torch, cell.cuda, cell.packages) == (torch, "13.0", BOTH)
    assert name in MATRIX.profiles["verified"]


@pytest.mark.parametrize("minor", sorted(CURRENT_RELEASES))
def test_every_cuda_index_of_a_current_release_has_a_py312_cell(minor):
    newest, indexes = CURRENT_RELEASES[minor]
    py312 = [c for c in MATRIX.cells if c.torch_minor == minor and c.python == "3.12"]
    assert sorted(c.cuda for c in py312) == indexes
    assert {c.torch for c in MATRIX.cells if c.torch_minor == minor} == {newest}


def test_python_ranges_follow_the_releases():
    by_minor = {}
    for cell in MATRIX.cells:
        by_minor.setdefault(cell.torch_minor, set()).add(cell.python)
    assert all("3.9" not in by_minor[m] for m in CURRENT_RELEASES)  # 2.9 dropped 3.9
    assert "3.14" in by_minor["2.9"]  # ... and added 3.14
    assert "3.10" not in by_minor["2.15"] and "3.15" in by_minor["2.15"]
    assert all("3.15" not in pythons for m, pythons in by_minor.items() if m != "2.15")


def test_cell_properties():
    cell = MATRIX.cell("py311-torch214-cu130")
    assert (cell.python_tag, cell.torch_minor, cell.cuda_tag, cell.build_tag) == (
        "cp311", "2.14", "cu130", "2141.130")
    assert MATRIX.cell("py312-torch28-cu129").build_tag == "280.129"
    assert MATRIX.cell("py312-torch210-cu128").build_tag == "2100.128"
    assert cell.torch_index_url == "https://download.pytorch.org/whl/cu130"
    with pytest.raises(AttributeError):
        cell.python = "3.12"  # frozen


def test_cells_are_unique_and_sorted():
    names = [c.name for c in MATRIX.cells]
    assert len(names) == len(set(names))
    keys = [(mx.version_key(c.torch), mx.version_key(c.cuda), mx.version_key(c.python))
            for c in MATRIX.cells]
    assert keys == sorted(keys)
    assert all(c.name == mx.Cell.make_name(c.python, c.torch, c.cuda) for c in MATRIX.cells)


def test_unknown_cell_names_close_matches():
    with pytest.raises(KeyError, match="py311-torch214-cu130"):
        MATRIX.cell("py311-torch214-cu13")


def test_packages_table():
    assert MATRIX.packages["sageattention"].version == "2.2.0"
    sage3 = MATRIX.packages["sageattn3"]
    assert (sage3.version, sage3.min_cuda, sage3.min_torch) == ("1.0.0", "12.8", "2.7.0")


# --- profiles ------------------------------------------------------------------------------------


def _cells(profile):
    return MATRIX.profile_cells(profile)


def test_default_profile_is_exactly_the_default_cell():
    assert MATRIX.profiles["default"] == ["py312-torch28-cu129"]


def test_sage3_all_only_has_cells_that_can_build_sageattn3():
    cells = _cells("sage3-all")
    assert cells and all(mx.version_key(c.cuda) >= (12, 8) for c in cells)
    assert all(mx.version_key(c.torch) >= (2, 7) for c in cells)
    assert {c.name for c in cells} == {c.name for c in MATRIX.cells if "sageattn3" in c.packages}


def test_sage2_all_is_every_sageattention_cell():
    expected = {c.name for c in MATRIX.cells if "sageattention" in c.packages}
    assert set(MATRIX.profiles["sage2-all"]) == expected
    assert "py313-torch27-cu128" not in expected  # a sageattn3-only seed


def test_python39_only_has_torch26_cells():
    assert {c.torch_minor for c in _cells("python39")} == {"2.6"}


def test_per_torch_and_per_python_profiles():
    minors = ["2.6", "2.7", "2.8"] + sorted(CURRENT_RELEASES, key=mx.version_key)
    for minor in minors:
        profile = "pytorch" + minor.replace(".", "")
        assert {c.torch_minor for c in _cells(profile)} == {minor}
        assert len(_cells(profile)) == sum(c.torch_minor == minor for c in MATRIX.cells)
    for python in ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]:
        profile = "python" + python.replace(".", "")
        assert {c.python for c in _cells(profile)} == {python}


def test_stable_is_default_verified_and_the_newest_main_line():
    stable = set(MATRIX.profiles["stable"])
    assert set(MATRIX.profiles["default"]) | set(MATRIX.profiles["verified"]) <= stable
    newest_main = {c.name for c in MATRIX.cells if c.torch_minor == "2.15" and c.cuda == "13.2"}
    assert {"3.11", "3.12", "3.13", "3.14", "3.15"} == {MATRIX.cell(n).python for n in newest_main}
    assert stable == newest_main | {"py312-torch28-cu129", "py311-torch214-cu130",
                                    "py312-torch211-cu130"}


def test_all_and_profile_names():
    assert MATRIX.profiles["all"] == [c.name for c in MATRIX.cells]
    expected = {"default", "verified", "stable", "sage2-all", "sage3-all", "all"}
    expected |= {f"pytorch2{m}" for m in range(6, 16)} | {f"python3{m}" for m in range(9, 16)}
    assert set(MATRIX.profiles) == expected
    assert all(MATRIX.profiles.values())


# --- validation ----------------------------------------------------------------------------------

BASE = """
[packages.sageattention]
version = "2.2.0"
min_cuda = "12.0"
min_torch = "2.6.0"
profile = "sage2-all"

[packages.sageattn3]
version = "1.0.0"
min_cuda = "12.8"
min_torch = "2.7.0"
profile = "sage3-all"

[releases."2.6"]
newest = "2.6.0"
pythons = ["3.9", "3.12"]
cuda_indexes = ["12.6", "12.8"]
pypi_cuda = "12.6"

[releases."2.8"]
newest = "2.8.0"
pythons = ["3.12"]
cuda_indexes = ["12.6", "12.9"]
pypi_cuda = "12.9"

[toolchains."12.6"]
gxx = "13"

[toolchains."12.8"]
gxx = "13"

[toolchains."12.9"]
gxx = "13"

[profiles]
default = ["py312-torch28-cu129"]
verified = ["py312-torch28-cu129"]

[[group]]
pythons = ["3.12"]
torch = "2.8.0"
cuda = ["12.9"]
"""


def _load(tmp_path, extra: str = "", base: str = BASE):
    path = tmp_path / "matrix.toml"
    path.write_text(base + extra, encoding="utf-8")
    return mx.load_matrix(path)


def test_minimal_matrix_loads(tmp_path):
    m = _load(tmp_path)
    assert [c.name for c in m.cells] == ["py312-torch28-cu129"]
    assert m.cells[0].packages == BOTH  # packages omitted: every package the cell can build


@pytest.mark.parametrize("group, message", [
    # sageattn3 needs CUDA >= 12.8
    ('pythons = ["3.12"]\ntorch = "2.8.0"\ncuda = ["12.6"]\npackages = ["sageattn3"]',
     r"sageattn3 needs CUDA >= 12.8.*12\.6"),
    # sageattn3 needs torch >= 2.7 (this test matrix lets torch 2.6 use CUDA 12.8)
    ('pythons = ["3.12"]\ntorch = "2.6.0"\ncuda = ["12.8"]\npackages = ["sageattn3"]',
     r"sageattn3 needs torch >= 2\.7\.0.*2\.6\.0"),
    ('pythons = ["3.12"]\ntorch = "2.8.0"\ncuda = ["12.9"]',
     r"duplicate cell py312-torch28-cu129"),
    ('pythons = ["3.12"]\ntorch = "2.8.0"\ncuda = ["12.6"]\npackages = ["flashattn"]',
     r"unknown package 'flashattn'"),
    ('pythons = ["3.12"]\ntorch = "2.8.0"\ncuda = ["12.8"]',
     r"publishes torch 2\.8 for CUDA 12\.6, 12\.9 only, not 12\.8"),
    ('pythons = ["3.9"]\ntorch = "2.8.0"\ncuda = ["12.6"]',
     r"wheels for Python 3\.12 only, not 3\.9"),
    ('pythons = ["3.12"]\ntorch = "2.7.0"\ncuda = ["12.6"]',
     r"torch 2\.7 has no \[releases"),
    ('pythons = ["3.12"]\ntorch = "2.8"\ncuda = ["12.6"]',
     r"torch = '2\.8' is not of the form"),
    ('pythons = ["3.12"]\ntorch = "2.8.0"\ncuda = ["12.6"]\npackages = []',
     r"packages must be a non-empty list"),
])
def test_loader_rejects_bad_cells(tmp_path, group, message):
    with pytest.raises(mx.MatrixError, match=message):
        _load(tmp_path, "\n[[group]]\n" + group + "\n")


def test_loader_reports_unreadable_files(tmp_path):
    with pytest.raises(mx.MatrixError, match="cannot read the matrix file"):
        mx.load_matrix(tmp_path / "missing.toml")
    with pytest.raises(mx.MatrixError, match="is not valid TOML"):
        _load(tmp_path, base="[packages\n")


def test_loader_rejects_cuda_without_toolchain(tmp_path):
    base = BASE.replace('[toolchains."12.6"]\ngxx = "13"\n', "")
    with pytest.raises(mx.MatrixError, match=r"CUDA 12\.6 has no \[toolchains"):
        _load(tmp_path, '\n[[group]]\npythons = ["3.12"]\ntorch = "2.8.0"\ncuda = ["12.6"]\n',
              base=base)


@pytest.mark.parametrize("old, new, message", [
    ('verified = ["py312-torch28-cu129"]', 'verified = ["py312-torch28-cu12"]',
     r"unknown cell 'py312-torch28-cu12'.*py312-torch28-cu129"),
    ('verified = ["py312-torch28-cu129"]', 'verified = ["py312-torch28-cu129"]\nall = ["py312-torch28-cu129"]',
     r"profile is computed"),
    ('verified = ["py312-torch28-cu129"]', 'verified = ["py312-torch28-cu129"]\npython312 = ["py312-torch28-cu129"]',
     r"profile is computed"),
    ('verified = ["py312-torch28-cu129"]\n', "", r"'verified' is required"),
    ('[releases."2.8"]\nnewest = "2.8.0"', '[releases."2.8"]\nnewest = "2.9.0"', r"not a 2\.8 release"),
    ('min_cuda = "12.8"', 'min_cuda = "twelve"', r"min_cuda = 'twelve'"),
    ("[[group]]", "[[groups]]\n[[group]]", r"unknown top-level table"),
])
def test_loader_rejects_bad_tables(tmp_path, old, new, message):
    assert old in BASE
    with pytest.raises(mx.MatrixError, match=message):
        _load(tmp_path, base=BASE.replace(old, new, 1))


# --- CLI -----------------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "scripts.matrix", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_list_profile_json():
    result = _cli("list", "--profile", "default", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["py312-torch28-cu129"]


def test_cli_list_defaults_to_all_lines():
    result = _cli("list")
    assert result.stdout.split() == MATRIX.profiles["all"]


def test_cli_overview_and_json():
    text = _cli().stdout
    assert f"{len(MATRIX.cells)} cells" in text and "sage3-all" in text
    data = json.loads(_cli("--json").stdout)
    assert [c["name"] for c in data["cells"]] == MATRIX.profiles["all"]
    assert data["profiles"] == MATRIX.profiles


def test_cli_show():
    record = json.loads(_cli("show", "py312-torch211-cu130", "--json").stdout)
    assert record["build_tag"] == "2110.130" and record["gxx"] == "14"
    assert "verified" in record["profiles"]


@pytest.mark.parametrize("args, message", [
    (("list", "--profile", "stabel"), "unknown profile 'stabel' in matrix.toml; did you mean stable?"),
    (("show", "py312-torch28-cu128"), "unknown cell 'py312-torch28-cu128'"),
])
def test_cli_errors_are_one_clear_line(args, message):
    result = _cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# --- Python >= 3.9 ---------------------------------------------------------------------------------

OWNED_SCRIPTS = ["__init__.py", "matrix.py", "matrix_cli.py", "gen_pixi.py", "gen_workflow.py",
                 "gen_readme.py", "generated.py"]


@pytest.mark.parametrize("name", OWNED_SCRIPTS)
def test_script_parses_as_python39(name):
    source = (REPO_ROOT / "scripts" / name).read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 9))  # rejects `match` and other 3.10+ syntax
    if name != "__init__.py":
        assert "from __future__ import annotations" in source
