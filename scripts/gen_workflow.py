"""Render ``.github/workflows/build-wheels.yml`` and map GitHub events to matrix profiles.

The workflow stays small: its first job asks ``python -m scripts.matrix ci-profile`` which
profile the event builds (:func:`ci_profile`, the one place that mapping lives),
``python -m scripts.matrix list --profile P --json`` for that profile's cells and
``ci-build-args`` whether the profile restricts the package (:func:`ci_build_args`); a build job
then runs once per cell with ``pixi run -e <cell> build [--package NAME]``. Only the ``workflow_dispatch`` choice list
is written from the matrix, so the file changes when a profile is added or removed.

Event -> profile:

=====================================  ==============
pull request                           ``default``
push to ``main``                       ``stable``
tag ``v*-sage3``                       ``sage3-all``
any other tag ``v*``                   ``sage2-all``
manual dispatch                        the chosen one
=====================================  ==============
"""

from __future__ import annotations

import fnmatch

from scripts.gen_pixi import PIXI_VERSION as _PIXI_MIN
from scripts.matrix import Matrix

WORKFLOW_PATH = ".github/workflows/build-wheels.yml"
SETUP_PIXI = "prefix-dev/setup-pixi@v0.9.6"
PIXI_VERSION = f"v{_PIXI_MIN}"  # the pixi whose schema pixi.toml is validated against

# (event, ref pattern, profile, what a person calls it); first match wins, so v*-sage3
# precedes v*. A manual dispatch builds the profile chosen in its form.
TRIGGERS = [
    ("pull_request", "*", "default", "pull request"),
    ("push", "refs/heads/main", "stable", "push to `main`"),
    ("push", "refs/tags/v*-sage3", "sage3-all", "tag `v*-sage3`"),
    ("push", "refs/tags/v*", "sage2-all", "any other tag `v*`"),
]


def ci_profile(matrix: Matrix, event: str, ref: str, requested: str = "") -> str:
    """The profile a GitHub event builds.

    Parameters
    ----------
    event : str
        ``github.event_name`` (``pull_request``, ``push``, ``workflow_dispatch``).
    ref : str
        ``github.ref``, e.g. ``refs/tags/v2.2.0``.
    requested : str
        The ``profile`` input of a manual dispatch; ignored for other events.

    Raises
    ------
    ValueError
        The event/ref pair builds nothing, or ``requested`` is not a profile.
    """
    if event == "workflow_dispatch":
        matrix.profile_cells(requested)  # raises, naming close matches, for an unknown profile
        return requested
    for trigger_event, pattern, profile, _label in TRIGGERS:
        if event == trigger_event and fnmatch.fnmatchcase(ref, pattern):
            return profile
    raise ValueError(f"event {event!r} with ref {ref!r} builds no profile (scripts/gen_workflow.py TRIGGERS)")


def ci_build_args(matrix: Matrix, profile: str) -> str:
    """Extra arguments of ``pixi run -e <cell> build`` for a profile.

    A package's own profile (``sage3-all`` for a ``v*-sage3`` tag) builds only that package
    (``--package sageattn3``); every other profile leaves the choice to scripts/build.py.
    """
    matrix.profile_cells(profile)  # raises for an unknown profile
    for package in matrix.packages.values():
        if package.profile == profile:
            return f"--package {package.name}"
    return ""


TEMPLATE = """\
# GENERATED from matrix.toml by `python -m scripts.matrix sync`: do not edit by hand.
# Event -> profile lives in scripts/gen_workflow.py (ci_profile); the cells of a profile come
# from `python -m scripts.matrix list --profile P --json` at run time.
name: build-wheels

on:
  pull_request:
  push:
    branches: [main]
    tags: ["v*"]
  workflow_dispatch:
    inputs:
      profile:
        description: Matrix profile to build (python -m scripts.matrix lists them)
        type: choice
        default: default
        options:
@OPTIONS@

permissions:
  contents: read

concurrency:
  group: ${{ github.workflow }}-${{ github.ref }}
  cancel-in-progress: ${{ github.event_name == 'pull_request' }}

jobs:
  cells:
    name: Pick the cells
    runs-on: ubuntu-latest
    outputs:
      profile: ${{ steps.pick.outputs.profile }}
      cells: ${{ steps.pick.outputs.cells }}
      build-args: ${{ steps.pick.outputs.build-args }}
    steps:
      - uses: actions/checkout@v6
      - uses: actions/setup-python@v6
        with:
          python-version: "3.12"
      - name: Profile and cells for this event
        id: pick
        env:
          EVENT: ${{ github.event_name }}
          REF: ${{ github.ref }}
          REQUESTED: ${{ inputs.profile }}
        run: |
          profile=$(python -m scripts.matrix ci-profile --event "$EVENT" --ref "$REF" --requested "$REQUESTED")
          cells=$(python -m scripts.matrix list --profile "$profile" --json)
          build_args=$(python -m scripts.matrix ci-build-args --profile "$profile")
          echo "profile $profile (build $build_args): $cells"
          {
            echo "profile=$profile"
            echo "cells=$cells"
            echo "build-args=$build_args"
          } >> "$GITHUB_OUTPUT"

  build:
    name: ${{ matrix.cell }}
    needs: cells
    runs-on: ubuntu-latest
    timeout-minutes: 180
    strategy:
      fail-fast: false
      matrix:
        cell: ${{ fromJSON(needs.cells.outputs.cells) }}
    steps:
      - uses: actions/checkout@v6
      - uses: @SETUP_PIXI@
        with:
          pixi-version: @PIXI_VERSION@
          environments: ${{ matrix.cell }}
      - name: Build, retag and verify
        run: pixi run -e ${{ matrix.cell }} build ${{ needs.cells.outputs.build-args }}
      - uses: actions/upload-artifact@v6
        with:
          name: wheels-${{ matrix.cell }}
          path: dist/${{ matrix.cell }}
          if-no-files-found: error

  release:
    name: GitHub release
    needs: build
    if: startsWith(github.ref, 'refs/tags/v')
    runs-on: ubuntu-latest
    permissions:
      contents: write
    steps:
      - uses: actions/download-artifact@v7
        with:
          pattern: wheels-*
          path: dist
      - name: Publish every wheel with its SHA256SUMS
        env:
          GH_TOKEN: ${{ github.token }}
          TAG: ${{ github.ref_name }}
        run: |
          mkdir release
          find dist -name '*.whl' -exec mv -t release {} +
          (cd release && sha256sum -- *.whl > SHA256SUMS)
          gh release create "$TAG" --repo "$GITHUB_REPOSITORY" --title "$TAG" \\
            --notes "Wheels per (python, torch, CUDA) cell; install with pip install <exact wheel URL>." \\
            release/*
"""


def render(matrix: Matrix) -> str:
    """The full text of the workflow for ``matrix``."""
    options = "\n".join(f"          - {name}" for name in matrix.profiles)
    return (TEMPLATE.replace("@OPTIONS@", options)
            .replace("@SETUP_PIXI@", SETUP_PIXI)
            .replace("@PIXI_VERSION@", PIXI_VERSION))
