"""scripts/conda_build.py up to the point where it needs the rattler-build CLI and conda-forge.

Neither exists here, so the script is driven with a fake ``rattler-build`` on PATH (it records
its arguments and environment) and a local channel directory; the real CLI's behaviour is not
claimed. What is checked: the plan per cell/profile, the one-variant ``-m`` file (rendered
with py-rattler-build to exactly the cell's variant), ``CONDA_OVERRIDE_CUDA``, and the one-line
stops when the CLI or the channel is missing.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from scripts import conda_build, conda_variants, matrix

CELL = "py312-torch28-cu129"  # the documented `pixi run -e py312-torch28-cu129 build-conda`


@pytest.fixture
def fake_rattler_build(tmp_path, monkeypatch):
    """A `rattler-build` on PATH that appends {argv, CONDA_OVERRIDE_CUDA} to calls.jsonl."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    script = bin_dir / "rattler-build"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'cuda': os.environ.get('CONDA_OVERRIDE_CUDA')}) + '\\n')\n"
        "sys.exit(int(os.environ.get('FAKE_RATTLER_BUILD_EXIT', '0')))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


@pytest.fixture
def local_channel(tmp_path):
    channel = tmp_path / "channel"
    (channel / "noarch").mkdir(parents=True)
    (channel / "noarch" / "repodata.json").write_text(json.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    return channel


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_dry_run_prints_one_command_per_package(capsys):
    assert conda_build.main(["--cell", CELL, "--dry-run"]) == 0
    out = capsys.readouterr().out
    commands = [line.strip() for line in out.splitlines() if "rattler-build build" in line]
    assert len(commands) == len(matrix.load_matrix().cell(CELL).packages) == 2
    for package, command in zip(("sageattention", "sageattn3"), commands):
        assert command.startswith("CONDA_OVERRIDE_CUDA=12.9 rattler-build build --recipe ")
        assert f"recipes/{package} -m " in command and f"variants/{package}-{CELL}.yaml" in command
        assert command.endswith("--ignore-recipe-variants --target-platform linux-64 --output-dir "
                                f"{conda_build.DEFAULT_OUTPUT_DIR} -c conda-forge")


def test_cell_comes_from_the_pixi_environment(monkeypatch, capsys):
    monkeypatch.setenv("PIXI_ENVIRONMENT_NAME", CELL)
    assert conda_build.main(["--dry-run"]) == 0
    assert f"sageattention for {CELL}: python 3.12, pytorch 2.8, cuda 12.9" in capsys.readouterr().out
    monkeypatch.delenv("PIXI_ENVIRONMENT_NAME")
    with pytest.raises(SystemExit) as exit_info:
        conda_build.main(["--dry-run"])
    assert exit_info.value.code == 2
    assert "no cell: pass --cell NAME or --profile NAME" in capsys.readouterr().err


def test_unknown_cell_and_profile_are_usage_errors(capsys):
    for argv in (["--cell", "py312-torch28-cu999"], ["--profile", "nope"], ["--cell", CELL, "--profile", "all"]):
        with pytest.raises(SystemExit) as exit_info:
            conda_build.main(argv + ["--dry-run"])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "py312-torch28-cu999" in err and "'nope' is not a profile" in err and "not both" in err


def test_stops_in_one_line_without_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no rattler-build anywhere
    assert conda_build.main(["--cell", CELL]) == conda_build.EXIT_UNAVAILABLE
    stops = [line for line in capsys.readouterr().out.splitlines() if "stopped" in line]
    assert stops == ["conda_build: stopped: the rattler-build CLI is not on PATH (PyPI's py-rattler-build ships none); "
                     f"on a machine with pixi and conda-forge access run: pixi run -e {CELL} build-conda"]


def test_stops_in_one_line_when_the_channel_is_unreachable(fake_rattler_build, monkeypatch, capsys):
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    # port 9 (discard) on loopback: refused at once, no network needed
    assert conda_build.main(["--cell", CELL, "--channel", "http://127.0.0.1:9/conda-forge"]) == conda_build.EXIT_UNAVAILABLE
    stops = [line for line in capsys.readouterr().out.splitlines() if "stopped" in line]
    assert len(stops) == 1 and "channel http://127.0.0.1:9/conda-forge is unreachable" in stops[0]
    assert stops[0].endswith(f"run: pixi run -e {CELL} build-conda")
    assert _calls(fake_rattler_build) == []


def test_runs_rattler_build_with_the_cells_variant(fake_rattler_build, local_channel, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CONDA_OVERRIDE_CUDA", raising=False)
    rattler_build = pytest.importorskip("rattler_build")
    out_dir = tmp_path / "out"
    assert conda_build.main(["--cell", CELL, "--channel", str(local_channel), "--output-dir", str(out_dir)]) == 0
    calls = _calls(fake_rattler_build)
    assert [Path(call["argv"][call["argv"].index("--recipe") + 1]).name for call in calls] == ["sageattention", "sageattn3"]
    for call in calls:
        argv = call["argv"]
        assert call["cuda"] == "12.9"  # GPU-less builders need __cuda for conda-forge's CUDA pytorch
        assert argv[:1] == ["build"] and argv[argv.index("-c") + 1] == str(local_channel)
        assert argv[argv.index("--output-dir") + 1] == str(out_dir)
        package = Path(argv[argv.index("--recipe") + 1]).name
        variant_file = Path(argv[argv.index("-m") + 1])
        recipe = rattler_build.Stage0Recipe.from_file(str(conda_variants.RECIPES_DIR / package / "recipe.yaml"))
        config = rattler_build.RenderConfig(platform=rattler_build.PlatformConfig(target_platform="linux-64"))
        (rendered,) = recipe.render(rattler_build.VariantConfig.from_file(str(variant_file)), config)
        assert {k: rendered.variant[k] for k in ("python", "pytorch", "cuda_compiler_version")} == \
            {"python": "3.12", "pytorch": "2.8", "cuda_compiler_version": "12.9"}
        assert rendered.recipe.to_dict()["build"]["string"].startswith("cuda129_py312_h")
    assert f"packages are in {out_dir}" in capsys.readouterr().out


def test_keeps_a_callers_cuda_override_and_passes_on_failure(fake_rattler_build, local_channel, tmp_path, monkeypatch):
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "13.0")
    monkeypatch.setenv("FAKE_RATTLER_BUILD_EXIT", "3")
    argv = ["--cell", CELL, "--channel", str(local_channel), "--output-dir", str(tmp_path / "out")]
    assert conda_build.main(argv) == 3
    calls = _calls(fake_rattler_build)
    assert len(calls) == 1 and calls[0]["cuda"] == "13.0"  # stops at the first failing package


def test_profile_builds_each_conda_variant_once_and_prints_skips(capsys):
    mx = matrix.load_matrix()
    assert conda_build.main(["--profile", "all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if "rattler-build build" in line]
    expected = sum(len(conda_variants.plan_package(mx, package)[0]) for package in mx.packages)
    assert len(commands) == expected
    skipped = sum(len(conda_variants.plan_package(mx, package)[1]) for package in mx.packages)
    assert out.count("conda_build: skip ") == skipped > 0


def test_a_cell_without_conda_variant_says_why(capsys):
    mx = matrix.load_matrix()
    cell = next(c for c in mx.cells if c.torch_minor not in conda_variants.CONDA_FORGE_PYTORCH_CUDA)
    assert conda_build.main(["--cell", cell.name, "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert f"for {cell.name}: no conda-forge linux-64 CUDA build of pytorch {cell.torch_minor}" in out
    assert "nothing to build" in out


def test_channel_url_and_local_channel_probe(local_channel, tmp_path):
    assert conda_build.channel_url("conda-forge") == "https://conda.anaconda.org/conda-forge"
    assert conda_build.channel_url("file:///x") == "file:///x"
    assert conda_build.channel_problem(str(local_channel)) is None
    assert conda_build.channel_problem(local_channel.as_uri()) is None
    assert "has no noarch/repodata.json" in conda_build.channel_problem(str(tmp_path / "empty"))
