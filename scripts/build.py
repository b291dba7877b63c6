"""Build one cell's wheel: preflight → compile → retag → verify → ``dist/<cell>/`` → summary.

Usage (from the repo root; inside pixi the cell comes from ``$PIXI_ENVIRONMENT_NAME``)::

    python -m scripts.build --cell py311-torch214-cu130 --package sageattention --archs 8.0  # trimmed dev build
    python -m scripts.build --cell py311-torch214-cu130 --package sageattn3      # 10.0a;10.3a;12.0a;12.1a
    pixi run -e py312-torch28-cu129 build          # every package of the cell, full arch lists

sageattn3 dev/test build for a non-Blackwell GPU (software FP4 MMA, see
sageattention3_blackwell/setup.py): ``SAGEATTN3_EMULATED_MMA_BUILD=1 python -m scripts.build
--package sageattn3 --archs 9.0a``.

Options: ``--package`` (sageattention | sageattn3; default: every package the cell builds, one
wheel each, so ``pixi run -e <cell> build`` also builds sageattn3 where matrix.toml says so),
``--archs`` (needs ``--package`` when the cell builds several packages: their arch lists differ) (else ``$TORCH_CUDA_ARCH_LIST``,
else scripts/cuda_archs.py's default for the cell's CUDA), ``--jobs`` (``MAX_JOBS``; default all
cores), ``--dist-dir`` (default ``dist``), ``--keep-temp`` (keep the temp build dir and its log).

The compile runs ``pip wheel --no-build-isolation`` (the extension must see the cell's torch) in a
temp directory; setup.py puts setuptools' build/ and egg-info there too, so the source tree is
left untouched. Progress: one line per ninja step (``[n/N]`` + the source file + elapsed time),
and a heartbeat every 30 s while nvcc works on a long unit.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import parse_wheel_filename

from scripts import cuda_archs, preflight, wheel_dist, wheel_retag, wheel_verify

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where each package's setup lives.
PACKAGE_SOURCES = {"sageattention": REPO_ROOT, "sageattn3": REPO_ROOT / "sageattention3_blackwell"}
HEARTBEAT_S = 30.0
_NINJA_STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]\s+(.*)$")


class BuildError(RuntimeError):
    """The build failed; the message says at which step."""


@dataclass
class BuildResult:
    cell: str
    package: str
    archs: list[str]
    seconds: float
    wheel: Path
    written: bool  # False: the identical wheel was already in dist/


def _describe_step(command: str) -> str:
    """``nvcc ... -c /x/csrc/fused/q.cu -o ...`` → ``csrc/fused/q.cu``; link steps → ``link``."""
    tokens = command.split()
    # torch's ninja rule can repeat "-c"; the source is the token after the last one.
    compile_at = max((i for i, tok in enumerate(tokens) if tok == "-c"), default=-1)
    if 0 <= compile_at < len(tokens) - 1:
        path = tokens[compile_at + 1].strip("'\"")
        try:
            return str(Path(path).resolve().relative_to(REPO_ROOT))
        except ValueError:
            return path
    return "link" if " -shared" in command else (tokens[0] if tokens else command)


def _stream(cmd: list[str], env: dict, log_path: Path, started: float) -> int:
    """Run ``cmd``, log everything to ``log_path``, echo progress lines; return the exit code."""
    lines: queue.Queue = queue.Queue()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        # ninja writing to a pipe prints "[n/N] command" when a unit *finishes*.
        done, total = 0, "?"
        while True:
            try:
                line = lines.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                print(f"build:   ... compiling ({done}/{total} units done, {time.monotonic() - started:.0f} s)", flush=True)
                continue
            if line is None:
                break
            log.write(line)
            step = _NINJA_STEP.match(line)
            if step:
                done, total = int(step.group(1)), step.group(2)
                unit = _describe_step(step.group(3))
                print(f"build:   [{done}/{total}] {unit} compiled  ({time.monotonic() - started:.0f} s)", flush=True)
            elif re.search(r"\berror\b", line, re.IGNORECASE) and "-Werror" not in line:
                print(f"build:   {line.rstrip()}", flush=True)
            elif re.search(r"-shared\b.*\s-o\s", line):
                print(f"build:   linking  ({time.monotonic() - started:.0f} s)", flush=True)
        return proc.wait()


def _source_date_epoch() -> str:
    """The HEAD commit's time (read-only git), else 1980-01-01, the earliest zip timestamp."""
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, check=True)
        return done.stdout.strip() or "315532800"
    except (OSError, subprocess.CalledProcessError):
        return "315532800"


def _tail(path: Path, count: int = 60) -> str:
    return "".join(path.read_text(errors="replace").splitlines(True)[-count:])


def default_package(cell) -> str:
    """The package ``build`` makes when none is named: sageattention, unless the cell only builds others."""
    return "sageattention" if "sageattention" in cell.packages else cell.packages[0]


def packages_to_build(cell, package: str | None, archs_given: bool) -> list[str]:
    """``[package]`` when named, else every package of the cell (sageattention first)."""
    if package:
        return [package]
    packages = sorted(cell.packages, key=lambda p: (p != "sageattention", p))
    if archs_given and len(packages) > 1:
        raise preflight.PreflightError(
            f"cell {cell.name} builds {', '.join(packages)}, whose arch lists differ: give --package "
            "with --archs (or TORCH_CUDA_ARCH_LIST)"
        )
    return packages


def build(cell_name: str | None, package: str | None, archs: list[str] | None, jobs: int,
          dist_dir: Path, keep_temp: bool = False) -> BuildResult:
    """Build, retag, verify and publish one wheel; see the module docstring."""
    started = time.monotonic()
    cell = preflight.resolve_cell(cell_name)
    package = package or default_package(cell)
    report = preflight.check(cell, archs, preflight.probe(), package)
    for line in report.lines():
        print(f"preflight: {line}")
    print("preflight: ok", flush=True)

    source = PACKAGE_SOURCES[package]
    if not ((source / "setup.py").is_file()):
        raise BuildError(f"package {package!r} has no setup.py in {source}: its CUDA build is not written yet")

    temp = Path(tempfile.mkdtemp(prefix=f"sageattn-build-{cell.name}-"))
    # Zip entry times from SOURCE_DATE_EPOCH (setuptools' bdist_wheel and `wheel tags` honour it)
    # so that a rebuild of the same commit is byte-identical and dist/ treats it as a no-op.
    os.environ.setdefault("SOURCE_DATE_EPOCH", _source_date_epoch())
    env = dict(os.environ)
    env.update({
        "TORCH_CUDA_ARCH_LIST": ";".join(report.archs),
        "MAX_JOBS": str(jobs),
        "CUDA_HOME": str(report.cuda_home),
        "SAGEATTN_CUDA_INCLUDE_DIRS": os.pathsep.join(str(d) for d in report.include_dirs),
        "SAGEATTN_BUILD_CELL": cell.name,
        "SAGEATTN_BUILD_TEMP": str(temp),
        "PYTHONUNBUFFERED": "1",
    })
    out_dir = temp / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", str(source), "--no-build-isolation", "--no-deps",
           "--disable-pip-version-check", "-v", "-w", str(out_dir)]
    log_path = temp / "build.log"
    print(f"build: compiling {package} for {cell.name} with MAX_JOBS={jobs} (log: {log_path})", flush=True)
    ok = False
    try:
        code = _stream(cmd, env, log_path, started)
        if code != 0:
            raise BuildError(f"pip wheel failed with exit code {code}; last lines of {log_path}:\n{_tail(log_path)}")
        wheels = sorted(out_dir.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"expected one wheel in {out_dir}, found {[w.name for w in wheels]}")
        compiled = time.monotonic() - started
        print(f"build: built {wheels[0].name} in {compiled:.0f} s", flush=True)

        tagged = wheel_retag.retag(wheels[0], cell.build_tag)
        print(f"build: retagged -> {tagged.name}", flush=True)
        _, version, _, _ = parse_wheel_filename(tagged.name)
        expected = wheel_verify.Expected(name=package, version=str(version), build_tag=cell.build_tag,
                                         torch_minor=cell.torch_minor, archs=report.archs)
        for line in wheel_verify.verify_wheel(tagged, expected):
            print(f"verify: {line}", flush=True)
        print("verify: ok", flush=True)
        published, written = wheel_dist.publish(tagged, Path(dist_dir) / cell.name)
        print(f"dist: {'wrote' if written else 'unchanged (identical file already there)'} {published}", flush=True)
        ok = True
    finally:
        if keep_temp or not ok:
            print(f"build: temp dir kept: {temp}", flush=True)
        else:
            shutil.rmtree(temp, ignore_errors=True)
    return BuildResult(cell.name, package, report.archs, time.monotonic() - started, published, written)


def summary_table(results: list[BuildResult]) -> str:
    """Fixed-width table: cell, package, archs, time, wheel size, wheel name."""
    header = ("cell", "package", "archs", "time", "size", "wheel")
    rows = [(r.cell, r.package, ";".join(r.archs), f"{r.seconds:.0f} s",
             f"{r.wheel.stat().st_size / 1e6:.2f} MB", r.wheel.name) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


NVCC_ENV_FLAGS = ("NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, retag, verify and publish one matrix cell's wheel.")
    parser.add_argument("--cell", help="matrix cell (default: $PIXI_ENVIRONMENT_NAME)")
    parser.add_argument("--package", choices=sorted(PACKAGE_SOURCES),
                        help="default: every package the cell builds (matrix.toml)")
    parser.add_argument("--archs", help="arch list like '8.0;9.0a' (default: $TORCH_CUDA_ARCH_LIST or the cell's)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs (MAX_JOBS)")
    parser.add_argument("--dist-dir", type=Path, default=REPO_ROOT / "dist", help="output root (default: dist)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp build dir and log")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    for name in NVCC_ENV_FLAGS:
        if os.environ.get(name):
            # nvcc reads these itself: kernel experiments (README, "Experiment switches") use them,
            # and nothing in the wheel's name or metadata records them.
            print(f"build: note: {name}={os.environ[name]!r} is set; nvcc adds it to every compile, "
                  "and the wheel does not record it", file=sys.stderr)
    try:
        archs_text = args.archs or os.environ.get("TORCH_CUDA_ARCH_LIST")
        archs = cuda_archs.parse_arch_list(archs_text) if archs_text else None
        cell = preflight.resolve_cell(args.cell)
        results = [build(cell.name, package, archs, args.jobs, args.dist_dir, args.keep_temp)
                   for package in packages_to_build(cell, args.package, archs is not None)]
    except (preflight.PreflightError, cuda_archs.ArchError) as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 1
    # FileNotFoundError: a tool verify needs (cuobjdump, readelf) is missing; its message names the fix.
    except (BuildError, wheel_retag.RetagError, wheel_verify.VerifyError, wheel_dist.DistError,
            FileNotFoundError) as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    print()
    print(summary_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
