"""Build the conda packages of one matrix cell (or a profile) with rattler-build into ``dist/conda``.

Usage::

    python -m scripts.conda_build                          # the cell of $PIXI_ENVIRONMENT_NAME
    python -m scripts.conda_build --cell py312-torch28-cu129
    python -m scripts.conda_build --profile all            # every cell of a matrix profile
    python -m scripts.conda_build --cell C --dry-run       # print the rattler-build commands only

pixi tasks: ``build-conda`` (``pixi run -e py312-torch28-cu129 build-conda``) and ``build-conda-all``.

For each package of the cell, the cell's conda variant (``scripts.conda_variants``: a cu128
wheel cell builds the CUDA 12.9 variant) is written as a one-variant config and passed with
``-m`` (rattler-build cannot override one key of a zip group alone, conda-recipes.md §2.4).
``CONDA_OVERRIDE_CUDA`` is set to the variant's CUDA unless already set: conda-forge's CUDA
pytorch depends on ``__cuda``, which a GPU-less builder lacks (conda-recipes.md §3.7).

Needs the ``rattler-build`` CLI (a conda-forge package; PyPI's py-rattler-build has none) and
the conda-forge channel. Without either it stops with one line saying which, and what to run
on a machine that has them (exit status 69, EX_UNAVAILABLE).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from scripts import conda_variants, matrix

__all__ = ["EXIT_UNAVAILABLE", "BuildStep", "plan", "channel_url", "channel_problem", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT_DIR = REPO_ROOT / "dist" / "conda"
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: a needed service (CLI, channel) is missing
_PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BuildStep:
    """One ``rattler-build build`` call: one package of one cell."""

    cell: str
    variant: conda_variants.CondaVariant
    variant_file: Path

    def command(self, output_dir: Path, channels: list[str]) -> list[str]:
        cmd = [
            "rattler-build", "build",
            "--recipe", str(conda_variants.RECIPES_DIR / self.variant.package),
            "-m", str(self.variant_file),
            "--ignore-recipe-variants",  # the one-variant file is the whole config
            "--target-platform", "linux-64",
            "--output-dir", str(output_dir),
        ]
        for channel in channels:
            cmd += ["-c", channel]
        return cmd

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env.setdefault("CONDA_OVERRIDE_CUDA", self.variant.cuda)
        return env


def _cells_to_build(mx: matrix.Matrix, cell: str | None, profile: str | None) -> list[matrix.Cell]:
    if cell and profile:
        raise ValueError("give either --cell or --profile, not both")
    if profile:
        if profile not in mx.profiles:
            raise ValueError(f"--profile {profile!r} is not a profile of matrix.toml (profiles: {', '.join(mx.profiles)})")
        return [mx.cell(name) for name in mx.profiles[profile]]
    cell = cell or os.environ.get("PIXI_ENVIRONMENT_NAME")
    if not cell or cell == "default":
        raise ValueError("no cell: pass --cell NAME or --profile NAME, or run inside a cell's pixi environment")
    return [mx.cell(cell)]


def plan(mx: matrix.Matrix, cells: list[matrix.Cell], variant_dir: Path
         ) -> tuple[list[BuildStep], list[conda_variants.SkippedCell]]:
    """Build steps for ``cells`` (each package of each cell, one conda variant built once) and
    the (cell, package) pairs that have no conda variant. Does not write files."""
    steps: list[BuildStep] = []
    skipped: list[conda_variants.SkippedCell] = []
    seen: set[tuple[str, tuple[str, str, str]]] = set()
    for cell in cells:
        for package in cell.packages:
            result = conda_variants.conda_variant(cell, package, mx.packages[package])
            if isinstance(result, conda_variants.SkippedCell):
                skipped.append(result)
                continue
            if (package, result.key) in seen:
                continue  # a cu128 and a cu129 cell can share one conda variant
            seen.add((package, result.key))
            steps.append(BuildStep(cell.name, result, variant_dir / f"{package}-{cell.name}.yaml"))
    return steps, skipped


def channel_url(channel: str) -> str:
    """``conda-forge`` -> ``https://conda.anaconda.org/conda-forge``; URLs and paths unchanged."""
    if "://" in channel or channel.startswith(("/", ".", "~")):
        return channel
    return f"https://conda.anaconda.org/{channel}"


def channel_problem(channel: str, timeout: float = _PROBE_TIMEOUT_S) -> str | None:
    """Why ``channel`` cannot be used from here, or None when its noarch repodata answers."""
    url = channel_url(channel)
    if url.startswith("file://") or "://" not in url:
        path = Path(os.path.expanduser(url[len("file://"):] if url.startswith("file://") else url))
        if not (path / "noarch" / "repodata.json").is_file():
            return f"channel {channel} has no noarch/repodata.json at {path}"
        return None
    probe = f"{url.rstrip('/')}/noarch/repodata.json"
    try:
        request = urllib.request.Request(probe, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"channel {channel} is unreachable ({probe}: {reason})"


def _elsewhere(cells: list[matrix.Cell], profile: str | None) -> str:
    if profile == "all":
        return "pixi run build-conda-all"
    if profile:
        return f"pixi run build-conda --profile {profile}"
    return f"pixi run -e {cells[0].name} build-conda"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", help="matrix cell, e.g. py312-torch28-cu129 (default: $PIXI_ENVIRONMENT_NAME)")
    parser.add_argument("--profile", help="a profile of matrix.toml, e.g. all")
    parser.add_argument("--channel", action="append", help="channel to solve from (repeatable; default conda-forge)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="default: dist/conda")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and commands; run nothing")
    args = parser.parse_args(argv)
    channels = args.channel or ["conda-forge"]

    mx = matrix.load_matrix()
    try:
        cells = _cells_to_build(mx, args.cell, args.profile)
    except (ValueError, KeyError) as error:
        parser.error(str(error).strip("'\""))
    output_dir = args.output_dir.resolve()
    steps, skipped = plan(mx, cells, output_dir / "variants")
    for skip in skipped:
        print(f"conda_build: skip {skip.package} for {skip.cell}: {skip.reason}")
    if not steps:
        print("conda_build: nothing to build: every package of the selected cells was skipped (reasons above)")
        return 1
    for step in steps:
        note = f" ({step.variant.note})" if step.variant.note else ""
        print(f"conda_build: {step.variant.package} for {step.cell}: python {step.variant.python}, "
              f"pytorch {step.variant.pytorch}, cuda {step.variant.cuda}{note}")
        if args.dry_run:
            env = step.env({})
            print(f"  CONDA_OVERRIDE_CUDA={env['CONDA_OVERRIDE_CUDA']} {' '.join(step.command(output_dir, channels))}")
    if args.dry_run:
        return 0

    if shutil.which("rattler-build") is None:
        print("conda_build: stopped: the rattler-build CLI is not on PATH (PyPI's py-rattler-build ships none); "
              f"on a machine with pixi and conda-forge access run: {_elsewhere(cells, args.profile)}")
        return EXIT_UNAVAILABLE
    for channel in channels:
        problem = channel_problem(channel)
        if problem:
            print(f"conda_build: stopped: {problem}; on a machine that reaches it run: {_elsewhere(cells, args.profile)}")
            return EXIT_UNAVAILABLE

    output_dir.mkdir(parents=True, exist_ok=True)
    for step in steps:
        step.variant_file.parent.mkdir(parents=True, exist_ok=True)
        step.variant_file.write_text(conda_variants.single_variant_yaml(step.variant))
        command = step.command(output_dir, channels)
        print(f"conda_build: running {' '.join(command)}", flush=True)
        result = subprocess.run(command, env=step.env(dict(os.environ)), cwd=REPO_ROOT, check=False)
        if result.returncode != 0:
            print(f"conda_build: rattler-build failed for {step.variant.package} ({step.cell}) with exit status {result.returncode}")
            return result.returncode
    print(f"conda_build: packages are in {output_dir} (a channel rattler-build indexed; "
          "`python -m scripts.conda_index` rewrites its index)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
