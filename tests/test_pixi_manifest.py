"""pixi.toml: generated from matrix.toml, valid against pixi's schema, one environment per cell.

pixi cannot run on the project's machines (no conda-forge access), so these checks are what
stands between the manifest and a broken `pixi run -e <cell> build` elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import gen_pixi, generated
from scripts import matrix as mx

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "pixi-manifest.schema.json"
MATRIX = mx.load_matrix()
TEXT = (REPO_ROOT / "pixi.toml").read_text(encoding="utf-8")
MANIFEST = tomllib.loads(TEXT)  # tomllib reads TOML 1.0 only: a parse is the 1.0 check
ENVS = MANIFEST["environments"]
FEATURES = MANIFEST["feature"]

# Host gcc limits (research: wheels-and-cuda.md §5 nvcc crt/host_config.h; pixi-conda-forge.md
# §3.5.2 torch 2.11.0 cpp_extension rejects g++ >= 14 with nvcc 12.8/12.9).
NVCC_MAX_GCC = {"12.6": 13, "12.8": 14, "12.9": 14, "13.0": 15, "13.2": 15}
TORCH_211_MAX_GCC = {"12.6": 13, "12.8": 13, "12.9": 13, "13.0": 15}
# The tasks of the shared contract: name -> command.
TASKS = {
    "build": "python -m scripts.build",
    "test": "python -m pytest tests",
    "bench": "python benchmarks/bench_attention.py",
    "matrix": "python -m scripts.matrix",
    "build-conda": "python -m scripts.conda_build",
    "build-conda-all": "python -m scripts.conda_build --profile all",
    "index": "python -m scripts.conda_index",
}


def test_pixi_toml_is_what_the_matrix_generates():
    assert TEXT == gen_pixi.render(MATRIX), "pixi.toml is stale: run `python -m scripts.matrix sync`"
    assert TEXT.startswith("# GENERATED from matrix.toml")


def test_sync_check_passes_on_the_repository():
    result = subprocess.run([sys.executable, "-m", "scripts.matrix", "sync", "--check"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sync_check_reports_a_stale_file(tmp_path, capsys):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / "README.md").write_text((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    expected = generated.expected_files(MATRIX, tmp_path)
    for path, text in expected.items():
        path.write_text(text, encoding="utf-8")
    assert generated.sync(MATRIX, check=True, root=tmp_path) == 0
    (tmp_path / "pixi.toml").write_text(TEXT.replace('"12.9.*"', '"12.8.*"', 1), encoding="utf-8")
    capsys.readouterr()
    assert generated.sync(MATRIX, check=True, root=tmp_path) == 1
    out = capsys.readouterr()
    assert '-cuda-version = "12.8.*"' in out.out and "stale: pixi.toml" in out.err
    assert generated.sync(MATRIX, root=tmp_path) == 0  # rewrites it
    assert (tmp_path / "pixi.toml").read_text(encoding="utf-8") == TEXT


def test_pixi_toml_is_schema_valid():
    if not SCHEMA.exists():
        pytest.skip(f"pixi manifest schema not found at {SCHEMA} (../shared is not beside the repo)")
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in requirements/dev.txt")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(MANIFEST)]
    assert errors == []
    # The validator can fail: a wrongly typed value and an unknown top-level key are rejected.
    assert list(validator.iter_errors({"workspace": {"channels": "conda-forge"}, "bogus": 1}))


def test_workspace_table():
    assert "project" not in MANIFEST  # deprecated since pixi 0.57
    assert MANIFEST["workspace"]["channels"] == ["conda-forge"]
    assert MANIFEST["workspace"]["platforms"] == ["linux-64"]


def _keys(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,)
            yield from _keys(value, path + (key,))


def test_no_deprecated_or_build_script_owned_settings():
    assert not [k for k in _keys(MANIFEST) if k[-1] == "system-requirements"]
    assert "TORCH_CUDA_ARCH_LIST" not in TEXT  # scripts/build.py computes it per CUDA
    assert not [k for k in _keys(MANIFEST) if k[-1] == "activation"]


def test_one_environment_per_cell_each_its_own_solve_group():
    assert set(ENVS) == {c.name for c in MATRIX.cells}
    assert [ENVS[c.name]["solve-group"] for c in MATRIX.cells] == [c.name for c in MATRIX.cells]


def _merged(env: str, table: str) -> dict:
    merged = {}
    for feature in ENVS[env]["features"]:
        for name, spec in FEATURES[feature].get(table, {}).items():
            assert name not in merged, f"{env}: {name} set by two features"
            merged[name] = spec
    return merged


@pytest.mark.parametrize("cell", MATRIX.cells, ids=lambda c: c.name)
def test_environment_pins(cell):
    conda = _merged(cell.name, "dependencies")
    pypi = _merged(cell.name, "pypi-dependencies")
    assert conda["python"] == f"{cell.python}.*"
    assert conda["cuda-version"] == conda["cuda-nvcc"] == f"{cell.cuda}.*"
    assert "cuda-cuobjdump" in conda  # scripts/wheel_verify.py needs it; cuda-nvcc does not ship it
    for header_pkg in ("cuda-cudart-dev", "libcublas-dev", "libcusparse-dev", "libcusolver-dev"):
        assert header_pkg in conda
    assert pypi["torch"] == {"version": f"=={cell.torch}",
                             "index": f"https://download.pytorch.org/whl/{cell.cuda_tag}"}
    assert "triton" in pypi
    gcc = int(conda["gxx_linux-64"].split(".")[0])
    assert conda["gcc_linux-64"] == conda["gxx_linux-64"] == f"{MATRIX.toolchain(cell).gxx}.*"
    assert gcc <= NVCC_MAX_GCC[cell.cuda]
    if mx.version_key(cell.torch) >= (2, 11) and cell.cuda in TORCH_211_MAX_GCC:
        assert gcc <= TORCH_211_MAX_GCC[cell.cuda]
    for tool in ("pip", "setuptools", "wheel", "ninja", "pytest", "jsonschema"):
        assert tool in conda
    has_rattler = "py-rattler" in pypi
    assert has_rattler == (cell.python != "3.9")  # py-rattler has no cp39 wheel


def test_tasks_have_commands_descriptions_and_the_default_cell():
    tasks = {}
    for feature in FEATURES.values():
        tasks.update(feature.get("tasks", {}))
    assert {name: t["cmd"] for name, t in tasks.items()} == TASKS
    assert all(t["description"] for t in tasks.values())
    assert {t["default-environment"] for t in tasks.values()} == set(MATRIX.profiles["default"])
    # every cell environment can build and test
    assert all("tools" in env["features"] for env in ENVS.values())
