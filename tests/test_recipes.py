"""The conda recipes (recipes/*/recipe.yaml, variants.yaml, meta.yaml), checked offline.

Every variant of both recipes is rendered with py-rattler-build (no channel, no solve) and its
build string, requirements, arch list and skip state are compared with what
``scripts.conda_variants`` planned from matrix.toml. The recipes are validated against the
recipe-format JSON schema (../shared/schemas; it lags rattler-build, so rendering is the
authority), and the conda-build meta.yaml is rendered per variant with a conda-build-like Jinja
context and compared with the v1 rendering, so the two recipes cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info < (3, 10):  # py-rattler(-build) has no Python 3.9 wheel: the py39 cells lack it
    rattler_build = pytest.importorskip("rattler_build", reason="py-rattler-build has no Python 3.9 wheel")
else:  # everywhere else (CI included) a missing tool is an error, not a skip
    import rattler_build
import yaml  # noqa: E402

from scripts import conda_variants, matrix  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT.parent / "shared" / "schemas" / "rattler-build-recipe.schema.json"
PACKAGES = ("sageattention", "sageattn3")
PYPROJECTS = {
    "sageattention": REPO_ROOT / "pyproject.toml",
    "sageattn3": REPO_ROOT / "sageattention3_blackwell" / "pyproject.toml",
}
# Host requirements every variant must carry (issue 3 list), beyond python/pip.
COMMON_HOST = ["setuptools", "pytorch", "pytorch * cuda*", "cuda-cudart-dev",
               "libcublas-dev", "libcusparse-dev", "libcusolver-dev"]
EXTRA_HOST = {"sageattention": [], "sageattn3": []}  # sageattn3's kernels are inline PTX: no CUTLASS
RUN = {"sageattention": ["python", "pytorch * cuda*", "triton"],  # triton: the Triton kernels
       "sageattn3": ["python", "pytorch * cuda*"]}


@pytest.fixture(scope="module")
def mx() -> matrix.Matrix:
    return matrix.load_matrix()


def _render(recipe_path: Path, variant_config, platform: str = "linux-64"):
    recipe = rattler_build.Stage0Recipe.from_file(str(recipe_path))
    config = rattler_build.RenderConfig(platform=rattler_build.PlatformConfig(target_platform=platform))
    return recipe.render(variant_config, config)


def _skip_states(package: str, variant_yaml: str, tmp_path: Path, platform: str = "linux-64") -> list[tuple[dict, bool]]:
    """(variant, skipped?) per rendered variant. py-rattler-build renders skipped variants too
    (the skip check lives in the CLI, conda-recipes.md §8.5), so each ``build.skip`` expression
    is copied into the context of a scratch copy of the recipe, where rendering evaluates it."""
    raw = yaml.safe_load((conda_variants.RECIPES_DIR / package / "recipe.yaml").read_text())
    for index, expression in enumerate(raw["build"]["skip"]):
        raw["context"][f"skip_probe_{index}"] = "${{ " + expression + " }}"
    # from_dict writes recipe.yaml into recipe_dir: always a scratch dir, never recipes/
    probe = rattler_build.Stage0Recipe.from_dict(raw, recipe_dir=tmp_path / f"probe-{package}")
    config = rattler_build.RenderConfig(platform=rattler_build.PlatformConfig(target_platform=platform))
    rendered = probe.render(rattler_build.VariantConfig.from_yaml(variant_yaml), config)
    states = []
    for variant in rendered:
        context = variant.recipe.context
        flags = [str(context[f"skip_probe_{i}"]).lower() for i in range(len(raw["build"]["skip"]))]
        assert set(flags) <= {"true", "false"}, f"skip expressions must render to booleans, got {flags}"
        states.append((variant.variant, "true" in flags))
    return states


# --- generated files --------------------------------------------------------------------------


def test_generated_files_match_matrix():
    stale = [str(path.relative_to(REPO_ROOT)) for path, text in conda_variants.generated_files().items()
             if not path.exists() or path.read_text() != text]
    assert not stale, f"out of date (run `python -m scripts.conda_variants`): {stale}"


def test_check_mode_reports_drift(tmp_path, monkeypatch, capsys):
    """--check must fail when a generated file differs (here: a variants.yaml edited by hand)."""
    copy = tmp_path / "recipes"
    for package in PACKAGES:
        (copy / package).mkdir(parents=True)
        for name in ("recipe.yaml", "build.sh", "variants.yaml", "meta.yaml"):
            (copy / package / name).write_text((conda_variants.RECIPES_DIR / package / name).read_text())
    monkeypatch.setattr(conda_variants, "RECIPES_DIR", copy)
    monkeypatch.setattr(conda_variants, "REPO_ROOT", tmp_path)
    assert conda_variants.main(["--check"]) == 0
    edited = copy / "sageattention" / "variants.yaml"
    edited.write_text(edited.read_text().replace('"3.12"', '"3.11"', 1))
    assert conda_variants.main(["--check"]) == 1
    assert "recipes/sageattention/variants.yaml is out of date" in capsys.readouterr().out


def test_versions_match_pyprojects():
    for package in PACKAGES:
        recipe = rattler_build.Stage0Recipe.from_file(str(conda_variants.RECIPES_DIR / package / "recipe.yaml"))
        project = tomllib.loads(PYPROJECTS[package].read_text())["project"]
        assert recipe.context["name"] == project["name"] == package
        assert recipe.context["version"] == project["version"]


def test_skip_thresholds_are_the_matrix_minimums(mx):
    """The recipes' skip bounds are matrix.toml's [packages.*] min_cuda / min_torch."""
    for package in PACKAGES:
        skips = yaml.safe_load((conda_variants.RECIPES_DIR / package / "recipe.yaml").read_text())["build"]["skip"]
        info = mx.packages[package]
        assert f'match(cuda_compiler_version, "<{info.min_cuda}")' in skips
        min_torch_minor = ".".join(info.min_torch.split(".")[:2])
        if package == "sageattn3":
            assert f'match(pytorch, "<{min_torch_minor}")' in skips


# --- cell -> conda variant mapping ---------------------------------------------------------------


def test_no_variant_uses_cuda_128_and_cu128_cells_map_to_129(mx):
    mapped = 0
    for package in PACKAGES:
        variants, _ = conda_variants.plan_package(mx, package)
        assert variants, f"{package}: no conda variant at all"
        assert all(v.cuda != "12.8" for v in variants), "conda-forge has no linux-64 CUDA 12.8 pytorch"
        for variant in variants:
            for cell_name in variant.cells:
                cell = mx.cell(cell_name)
                assert variant.python == cell.python and variant.pytorch == cell.torch_minor
                assert variant.cuda in conda_variants.CONDA_FORGE_PYTORCH_CUDA[variant.pytorch]
                if cell.cuda == "12.8":
                    assert variant.cuda == "12.9" and "12.8 -> 12.9" in variant.note
                    mapped += 1
    assert mapped, "the matrix has cu128 cells; none was mapped"


def test_every_skipped_cell_has_a_reason_and_no_variant(mx):
    for package in PACKAGES:
        variants, skipped = conda_variants.plan_package(mx, package)
        served = {cell for variant in variants for cell in variant.cells}
        wanted = {cell.name for cell in mx.cells if package in cell.packages}
        assert served | {s.cell for s in skipped} == wanted
        assert not served & {s.cell for s in skipped}
        for skip in skipped:
            assert skip.reason and skip.package == package


def test_mapping_rules_on_synthetic_cells(mx):
    cell = matrix.Cell("py312-torch27-cu128", "3.12", "2.7.1", "12.8", ("sageattention", "sageattn3"))
    variant = conda_variants.conda_variant(cell, "sageattn3", mx.packages["sageattn3"])
    assert (variant.cuda, variant.arch_list) == ("12.9", ("10.0a", "12.0a"))  # torch 2.7 knows no 10.3a/12.1a
    too_new = matrix.Cell("py312-torch99-cu130", "3.12", "2.99.0", "13.0", ("sageattention",))
    skipped = conda_variants.conda_variant(too_new, "sageattention", mx.packages["sageattention"])
    assert isinstance(skipped, conda_variants.SkippedCell) and "no conda-forge linux-64 CUDA build of pytorch 2.99" in skipped.reason
    old_python = matrix.Cell("py39-torch28-cu129", "3.9", "2.8.0", "12.9", ("sageattention",))
    skipped = conda_variants.conda_variant(old_python, "sageattention", mx.packages["sageattention"])
    assert isinstance(skipped, conda_variants.SkippedCell) and "not 3.9" in skipped.reason
    with pytest.raises(ValueError, match="does not build package 'sageattn3'"):
        conda_variants.conda_variant(old_python, "sageattn3", mx.packages["sageattn3"])


# --- rendering every variant ---------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_render_every_variant(package, mx, tmp_path, monkeypatch):
    monkeypatch.delenv("MAX_JOBS", raising=False)
    planned, _ = conda_variants.plan_package(mx, package)
    by_key = {variant.key: variant for variant in planned}
    variants_path = conda_variants.RECIPES_DIR / package / "variants.yaml"
    rendered = _render(conda_variants.RECIPES_DIR / package / "recipe.yaml",
                       rattler_build.VariantConfig.from_file(str(variants_path)))
    assert len(rendered) == len(planned)
    strings = set()
    for output in rendered:
        used = output.variant
        plan = by_key[(used["python"], used["pytorch"], used["cuda_compiler_version"])]
        recipe = output.recipe.to_dict()
        cuda_tag, py_tag = plan.cuda.replace(".", ""), plan.python.replace(".", "")
        string = recipe["build"]["string"]
        assert re.fullmatch(rf"cuda{cuda_tag}_py{py_tag}_h[0-9a-f]{{7}}_0", string), string
        strings.add(string)
        assert recipe["package"] == {"name": package, "version": recipe["context"]["version"]}
        env = recipe["build"]["script"]["env"]
        assert env == {"TORCH_CUDA_ARCH_LIST": ";".join(plan.arch_list), "MAX_JOBS": "4",
                       "SAGEATTN_BUILD_CELL": f"conda-py{plan.python}-pytorch{plan.pytorch}-cuda{plan.cuda}"}
        assert recipe["build"]["script"]["file"] == "build.sh"
        build = recipe["requirements"]["build"]
        assert build == [f"gcc_linux-64 {plan.gcc}.*", f"gxx_linux-64 {plan.gcc}.*",
                         f"cuda-nvcc_linux-64 {plan.cuda}.*", f"sysroot_linux-64 {plan.c_stdlib_version}.*", "ninja"]
        host = recipe["requirements"]["host"]
        for spec in ["python", "pip", f"cuda-version {plan.cuda}.*"] + COMMON_HOST + EXTRA_HOST[package]:
            assert spec in host, f"{package} {string}: host lacks {spec!r}"
        assert recipe["requirements"]["run"] == RUN[package]
        assert used["pytorch"] == plan.pytorch  # the bare `pytorch` host spec receives this pin
        imports = [name for test in recipe["tests"] if "python" in test for name in test["python"]["imports"]]
        assert imports == [package]
    assert len(strings) == len(planned), "two variants share a build string"
    assert all(not skipped for _, skipped in _skip_states(package, variants_path.read_text(), tmp_path))


def test_build_script_env_takes_max_jobs_from_the_caller(monkeypatch):
    monkeypatch.setenv("MAX_JOBS", "7")
    variant = rattler_build.VariantConfig.from_file(str(conda_variants.RECIPES_DIR / "sageattention" / "variants.yaml"))
    output = _render(conda_variants.RECIPES_DIR / "sageattention" / "recipe.yaml", variant)[0]
    assert output.recipe.to_dict()["build"]["script"]["env"]["MAX_JOBS"] == "7"


def _variant_yaml(**columns: list[str]) -> str:
    lines = ["c_compiler: [gcc]", "cxx_compiler: [gxx]", "c_stdlib: [sysroot]", "cuda_compiler: [cuda-nvcc]"]
    n = len(next(iter(columns.values())))
    defaults = {"torch_cuda_arch_list": ["8.0"] * n, "c_compiler_version": ["13"] * n,
                "cxx_compiler_version": ["13"] * n, "c_stdlib_version": ["2.17"] * n}
    merged = {**defaults, **columns}
    lines += [f"{key}: {json.dumps(values)}" for key, values in merged.items()]
    lines.append(f"zip_keys: [{json.dumps(list(merged))}]")
    return "\n".join(lines) + "\n"


def test_skips_impossible_variants(tmp_path):
    """sageattn3 below CUDA 12.8 or torch 2.7, sageattention below CUDA 12.0, and any non-Linux
    platform are skipped; the boundary cases are not."""
    config = _variant_yaml(python=["3.12"] * 4, pytorch=["2.6", "2.8", "2.7", "2.8"],
                           cuda_compiler_version=["12.6", "12.6", "12.9", "12.8"])
    states = {(v["pytorch"], v["cuda_compiler_version"]): skipped for v, skipped in _skip_states("sageattn3", config, tmp_path)}
    assert states == {("2.6", "12.6"): True, ("2.8", "12.6"): True, ("2.7", "12.9"): False, ("2.8", "12.8"): False}
    config = _variant_yaml(python=["3.12"] * 2, pytorch=["2.6"] * 2, cuda_compiler_version=["11.8", "12.0"])
    states = {v["cuda_compiler_version"]: skipped for v, skipped in _skip_states("sageattention", config, tmp_path)}
    assert states == {"11.8": True, "12.0": False}
    for package in PACKAGES:
        config = _variant_yaml(python=["3.12"], pytorch=["2.8"], cuda_compiler_version=["12.9"])
        assert [s for _, s in _skip_states(package, config, tmp_path, platform="win-64")] == [True]


# --- build.sh ------------------------------------------------------------------------------------

_BUILD_ENV_KEYS = ("TORCH_CUDA_ARCH_LIST", "MAX_JOBS", "SAGEATTN_BUILD_CELL", "CUDA_HOME", "SAGEATTN_CUDA_INCLUDE_DIRS")


@pytest.mark.parametrize("package", PACKAGES)
def test_build_script_calls_our_build_path(package, tmp_path):
    """build.sh with a recording stand-in for $PYTHON: the pip call, the environment it gets,
    and a loud stop when the recipe did not pass TORCH_CUDA_ARCH_LIST."""
    log = tmp_path / "python-call.json"
    fake_python = tmp_path / "python"
    fake_python.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': {{k: os.environ.get(k) for k in {_BUILD_ENV_KEYS!r}}}}}, open({str(log)!r}, 'w'))\n"
    )
    fake_python.chmod(0o755)
    prefix, build_prefix = tmp_path / "host", tmp_path / "build"
    (prefix / "targets" / "x86_64-linux" / "include" / "cccl").mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "PYTHON": str(fake_python), "PREFIX": str(prefix),
           "BUILD_PREFIX": str(build_prefix), "TORCH_CUDA_ARCH_LIST": "8.0;9.0a", "MAX_JOBS": "4",
           "SAGEATTN_BUILD_CELL": "conda-py3.12-pytorch2.8-cuda12.9"}
    script = conda_variants.RECIPES_DIR / package / "build.sh"
    subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, check=True, capture_output=True)
    call = json.loads(log.read_text())
    source = "." if package == "sageattention" else "./sageattention3_blackwell"
    assert call["argv"] == ["-m", "pip", "install", source, "-vv", "--no-deps", "--no-build-isolation"]
    include = prefix / "targets" / "x86_64-linux" / "include"
    assert call["env"]["CUDA_HOME"] == str(build_prefix)
    assert {str(include), str(include / "cccl")} <= set(call["env"]["SAGEATTN_CUDA_INCLUDE_DIRS"].split(os.pathsep))
    assert {k: call["env"][k] for k in _BUILD_ENV_KEYS[:3]} == {k: env[k] for k in _BUILD_ENV_KEYS[:3]}
    log.unlink()
    del env["TORCH_CUDA_ARCH_LIST"]
    result = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "TORCH_CUDA_ARCH_LIST" in result.stderr
    assert not log.exists(), "pip ran without an arch list"


# --- schema ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_validator():
    jsonschema = pytest.importorskip("jsonschema")
    assert SCHEMA_PATH.is_file(), f"{SCHEMA_PATH} is missing: CI checks out ../shared beside the repo"
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("package", PACKAGES)
def test_recipe_validates_against_schema(package, schema_validator):
    recipe = yaml.safe_load((conda_variants.RECIPES_DIR / package / "recipe.yaml").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema_validator.iter_errors(recipe)]
    assert not errors, errors


@pytest.mark.parametrize("breakage", ["schema_version", "run_not_a_list", "unknown_build_key"])
def test_schema_rejects_a_broken_recipe(breakage, schema_validator):
    """The validator is not vacuous: each single breakage of a valid recipe is reported."""
    recipe = yaml.safe_load((conda_variants.RECIPES_DIR / "sageattention" / "recipe.yaml").read_text())
    if breakage == "schema_version":
        recipe["schema_version"] = 2
    elif breakage == "run_not_a_list":
        recipe["requirements"]["run"] = {"pytorch": "*"}
    else:
        recipe["build"]["scirpt"] = recipe["build"].pop("script")
    assert list(schema_validator.iter_errors(recipe)), f"{breakage} was not reported"


# --- conda-build meta.yaml ---------------------------------------------------------------------


def _render_meta_yaml(text: str, variant: dict, platform: str = "linux") -> dict:
    """meta.yaml as conda-build would see it for ``variant``: selector lines dropped when false,
    then Jinja with conda-build's names. compiler()/stdlib() follow rattler-build's rendering
    (``gcc_linux-64 13.*``) so the two recipes compare entry by entry."""
    jinja2 = pytest.importorskip("jinja2")
    namespace = {**variant, "linux": platform == "linux", "win": platform == "win", "osx": platform == "osx"}
    kept = []
    for line in text.splitlines():
        selector = re.search(r"#\s*\[(.+)\]\s*$", line)
        if selector:
            if not eval(selector.group(1), {}, dict(namespace)):  # noqa: S307 - our own generated selector
                continue
            line = line[: selector.start()].rstrip()
        kept.append(line)

    def compiler(language: str) -> str:
        return f"{variant[language + '_compiler']}_linux-64 {variant[language + '_compiler_version']}.*"

    def stdlib(language: str) -> str:
        return f"{variant[language + '_stdlib']}_linux-64 {variant[language + '_stdlib_version']}.*"

    rendered = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string("\n".join(kept)).render(
        **variant, compiler=compiler, stdlib=stdlib, environ={}, RECIPE_DIR="recipe",
        CONDA_PY=variant["python"].replace(".", ""), PKG_HASH="0000000", PKG_BUILDNUM="0",
    )
    return yaml.safe_load(rendered) or {}


@pytest.mark.parametrize("package", PACKAGES)
def test_meta_yaml_agrees_with_recipe_yaml(package, monkeypatch):
    monkeypatch.delenv("MAX_JOBS", raising=False)
    meta_text = (conda_variants.RECIPES_DIR / package / "meta.yaml").read_text()
    variants_path = conda_variants.RECIPES_DIR / package / "variants.yaml"
    rendered = _render(conda_variants.RECIPES_DIR / package / "recipe.yaml",
                       rattler_build.VariantConfig.from_file(str(variants_path)))
    for output in rendered:
        v1 = output.recipe.to_dict()
        meta = _render_meta_yaml(meta_text, output.variant)
        assert "skip" not in meta["build"], f"meta.yaml skips {output.variant}, recipe.yaml does not"
        assert {k: meta["package"][k] for k in ("name", "version")} == v1["package"]
        assert re.sub(r"_h[0-9a-f]{7}_", "_h0000000_", v1["build"]["string"]) == meta["build"]["string"]
        for section in ("build", "host", "run"):
            assert meta["requirements"][section] == v1["requirements"][section], section
        env = dict(entry.split("=", 1) for entry in meta["build"]["script_env"])
        assert env == v1["build"]["script"]["env"]
        assert meta["build"]["ignore_run_exports_from"] == v1["requirements"]["ignore_run_exports"]["from_package"]
        assert meta["test"]["imports"] == [package] and "pip check" in meta["test"]["commands"]
    # and the selectors skip what recipe.yaml skips
    low = {**rendered[0].variant, "cuda_compiler_version": "11.8"}
    assert _render_meta_yaml(meta_text, low)["build"]["skip"] is True
    assert _render_meta_yaml(meta_text, rendered[0].variant, platform="win")["build"]["skip"] is True


def test_meta_yaml_translation_refuses_unknown_jinja(tmp_path):
    recipe = (conda_variants.RECIPES_DIR / "sageattention" / "recipe.yaml").read_text()
    (tmp_path / "recipe.yaml").write_text(recipe.replace("- ninja", "- ${{ pin_compatible('numpy') }}"))
    with pytest.raises(ValueError, match="no conda-build translation for"):
        conda_variants.meta_yaml("sageattention", recipe_dir=tmp_path)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
