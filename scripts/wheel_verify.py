"""Verify a retagged wheel before it goes to ``dist/``: name, WHEEL, RECORD, archs, torch pin, rpath.

Checks (issue 2 item 4, "Verify"):

* ``packaging.utils.parse_wheel_filename`` gives the expected name, version and build tag;
* ``.dist-info/WHEEL`` has ``Build:`` equal to the tag and ``Tag:`` lines equal to the name's tags;
* every ``RECORD`` entry's sha256 and size match, and every file in the zip is listed;
* each compiled extension holds machine code (``cuobjdump --list-elf``) for exactly the requested
  archs: ``"8.0"`` → ``sm_80``, ``"9.0a"`` → ``sm_90a``; ``+PTX`` archs also carry PTX;
* METADATA ``Requires-Dist`` pins torch to the cell's minor (``torch==2.14.*``), and nothing else
  constrains torch;
* no extension has an RPATH/RUNPATH (a build-machine path there would leak into users' installs);
* every extension links libstdc++ dynamically (``NEEDED libstdc++.so.6``). A toolchain that links
  it statically (seen: the lent H100's ``/opt/gcc`` wrapper) gives the .so a private copy of the
  iostream/locale machinery next to torch's, and the first ``TORCH_CHECK`` message that formats
  an integer segfaults inside ``std::ostream::_M_insert<long>`` (measured there, torch 2.11).

Every problem found is collected; :class:`VerifyError` lists them all.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from scripts import cuda_archs, cuda_env

__all__ = ["VerifyError", "Expected", "verify_wheel", "cuobjdump_archs", "readelf_dynamic", "DynamicSection"]

# (path of an extracted .so) -> set of "sm_80"-style names for ELF and for PTX entries
ArchLister = Callable[[Path], "tuple[set[str], set[str]]"]
DynamicReader = Callable[[Path], "DynamicSection"]


class VerifyError(RuntimeError):
    """The wheel is not what the build promised; ``problems`` lists every finding."""

    def __init__(self, wheel: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{Path(wheel).name} failed verification:\n  - " + "\n  - ".join(problems))


@dataclass
class Expected:
    """What a wheel of one (cell, package) must be."""

    name: str
    version: str
    build_tag: str
    torch_minor: str  # "2.14"
    archs: list[str] = field(default_factory=list)  # empty: pure-Python wheel, no extension expected


def cuobjdump_archs(so: Path, cuobjdump: Path | None = None) -> tuple[set[str], set[str]]:
    """``({"sm_80", ...} with SASS, {"sm_120", ...} with PTX)`` of a shared object."""
    tool = cuobjdump or cuda_env.find_cuobjdump()
    if tool is None:
        raise FileNotFoundError(
            "cuobjdump not found (CUDA_HOME/bin, PATH, pip's nvidia/*/bin): pip install nvidia-cuda-cuobjdump"
        )

    def listing(option: str) -> set[str]:
        done = subprocess.run([str(tool), option, str(so)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # "No PTX file found" / "no ELF file found" exit non-zero with nothing to list.
        return set(re.findall(r"\.(sm_\d+[af]?)\.(?:cubin|ptx)\b", done.stdout))

    return listing("--list-elf"), listing("--list-ptx")


@dataclass
class DynamicSection:
    """The parts of an ELF ``.dynamic`` section that verification looks at."""

    needed: list[str] = field(default_factory=list)
    rpaths: list[str] = field(default_factory=list)  # RPATH and RUNPATH entries


def readelf_dynamic(so: Path) -> DynamicSection:
    """NEEDED and RPATH/RUNPATH entries of a shared object (``readelf -d``)."""
    readelf = shutil.which("readelf")
    if readelf is None:
        raise FileNotFoundError("readelf not found: install binutils")
    text = subprocess.run([readelf, "-d", str(so)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return DynamicSection(
        needed=re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", text),
        rpaths=re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library (?:rpath|runpath): \[(.*)\]", text),
    )


def _record_problems(zf: zipfile.ZipFile, dist_info: str) -> list[str]:
    problems = []
    record_name = f"{dist_info}/RECORD"
    try:
        rows = list(csv.reader(io.TextIOWrapper(zf.open(record_name), encoding="utf-8")))
    except KeyError:
        return [f"{record_name} is missing"]
    listed = set()
    for row in rows:
        if not row:
            continue
        path, digest, size = (row + ["", ""])[:3]
        listed.add(path)
        if path == record_name:
            continue
        if not digest.startswith("sha256="):
            problems.append(f"RECORD: {path} has no sha256 hash ({digest!r})")
            continue
        try:
            data = zf.read(path)
        except KeyError:
            problems.append(f"RECORD lists {path}, which is not in the wheel")
            continue
        actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if digest != f"sha256={actual}":
            problems.append(f"RECORD hash mismatch for {path}")
        if size and size != str(len(data)):
            problems.append(f"RECORD size mismatch for {path}: {size} listed, {len(data)} in the wheel")
    for info in zf.infolist():
        if not info.is_dir() and info.filename not in listed:
            problems.append(f"{info.filename} is in the wheel but not in RECORD")
    return problems


def verify_wheel(
    wheel: Path,
    expected: Expected,
    *,
    list_archs: ArchLister = cuobjdump_archs,
    read_dynamic: DynamicReader = readelf_dynamic,
) -> list[str]:
    """Verify ``wheel`` against ``expected``; return the lines of a passing report.

    Raises :class:`VerifyError` listing every problem. ``list_archs``/``read_dynamic`` are
    injectable so tests can check the logic without a real CUDA binary.
    """
    wheel = Path(wheel)
    problems: list[str] = []
    report: list[str] = []
    try:
        name, version, build, tags = parse_wheel_filename(wheel.name)
    except Exception as exc:  # InvalidWheelFilename
        raise VerifyError(wheel, [f"invalid wheel file name: {exc}"]) from None
    tag_text = "%d%s" % build if build else ""
    if name != canonicalize_name(expected.name) or str(version) != expected.version:
        problems.append(f"name/version {name} {version}, expected {expected.name} {expected.version}")
    if tag_text != expected.build_tag:
        problems.append(f"file name build tag {tag_text or '(none)'!r}, expected {expected.build_tag!r}")
    else:
        report.append(f"build tag {tag_text} (parse_wheel_filename -> {build})")

    with zipfile.ZipFile(wheel) as zf:
        dist_infos = sorted({n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")})
        if len(dist_infos) != 1:
            raise VerifyError(wheel, problems + [f"expected one .dist-info directory, found {dist_infos}"])
        dist_info = dist_infos[0]
        wheel_meta = Parser().parsestr(zf.read(f"{dist_info}/WHEEL").decode())
        builds = wheel_meta.get_all("Build") or []
        if builds != [expected.build_tag]:
            problems.append(f"WHEEL Build: {builds}, expected [{expected.build_tag!r}]")
        else:
            report.append(f"WHEEL Build: {builds[0]}")
        wheel_tags = set(wheel_meta.get_all("Tag") or [])
        if wheel_tags != {str(t) for t in tags}:
            problems.append(f"WHEEL Tag: {sorted(wheel_tags)} disagrees with the file name's {sorted(map(str, tags))}")

        record_problems = _record_problems(zf, dist_info)
        problems += record_problems
        if not record_problems:
            report.append(f"RECORD: {len(zf.namelist())} files, every sha256 checks")

        metadata = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        torch_reqs = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []
                      if canonicalize_name(Requirement(r).name) == "torch"]
        pin = f"=={expected.torch_minor}.*"
        if [str(r.specifier) for r in torch_reqs] != [pin] or any(r.marker for r in torch_reqs):
            problems.append(f"Requires-Dist for torch is {[str(r) for r in torch_reqs]}, expected ['torch{pin}']")
        else:
            report.append(f"Requires-Dist: torch{pin}")

        extensions = [n for n in zf.namelist() if n.endswith(".so")]
        if expected.archs and not extensions:
            problems.append("no compiled extension (*.so) in the wheel, but archs were requested")
        if extensions:
            with tempfile.TemporaryDirectory() as tmp:
                for member in extensions:
                    so = Path(zf.extract(member, tmp))
                    problems += _extension_problems(member, so, expected.archs, list_archs, read_dynamic, report)
    if problems:
        raise VerifyError(wheel, problems)
    return report


def _extension_problems(member, so, archs, list_archs, read_dynamic, report) -> list[str]:
    problems = []
    elf, ptx = list_archs(so)
    want_elf = {cuda_archs.arch_to_sm(a) for a in archs}
    want_ptx = {cuda_archs.arch_to_sm(a) for a in archs if a.endswith("+PTX")}
    if want_elf - elf:
        problems.append(f"{member}: no machine code for {sorted(want_elf - elf)} (cuobjdump --list-elf found {sorted(elf)})")
    if elf - want_elf:
        problems.append(f"{member}: machine code for unrequested {sorted(elf - want_elf)} (requested {sorted(want_elf)})")
    if want_ptx - ptx:
        problems.append(f"{member}: no PTX for {sorted(want_ptx - ptx)} (+PTX requested)")
    if not problems:
        report.append(f"{member}: SASS for {' '.join(sorted(elf))}" + (f", PTX for {' '.join(sorted(ptx))}" if ptx else ""))
    dynamic = read_dynamic(so)
    if dynamic.rpaths:
        problems.append(f"{member}: has RPATH/RUNPATH {dynamic.rpaths}; build-machine paths must not reach users")
    if "libstdc++.so.6" not in dynamic.needed:
        problems.append(
            f"{member}: does not link libstdc++.so.6 dynamically (NEEDED: {dynamic.needed}); a static libstdc++ "
            "crashes next to torch's: build with a g++ that links it dynamically (set CXX/CC)"
        )
    else:
        report.append(f"{member}: no RPATH/RUNPATH, libstdc++ linked dynamically")
    return problems
