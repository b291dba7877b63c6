"""Retag (scripts/wheel_retag.py) and verify (scripts/wheel_verify.py) on small dummy wheels.

The wheels are built here with ``wheel pack`` (so their RECORD is real); the one tampered wheel
is written with zipfile on purpose, to prove that verify catches what a hand edit breaks.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from scripts.wheel_retag import RetagError, retag
from scripts.wheel_verify import DynamicSection, Expected, VerifyError, verify_wheel


def pack_wheel(tmp: Path, *, requires=("torch==2.14.*",), extension: str | None = None, build: str = "") -> Path:
    """A minimal wheel ``demo-1.0`` (optionally with a fake ``demo/_C.so``) via ``wheel pack``."""
    root = tmp / "tree"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "__init__.py").write_text("VALUE = 42\n")
    if extension is not None:
        (root / "demo" / extension).write_bytes(b"\x7fELF fake shared object")
    info = root / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_x86_64\n")
    out = tmp / "out"
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "wheel", "pack", str(root), "-d", str(out)]
    if build:
        cmd += ["--build-number", build]
    subprocess.run(cmd, check=True, stdout=subprocess.PIPE)
    (wheel,) = out.glob("*.whl")
    return wheel


def no_archs(_so):
    return set(), set()


def clean_dynamic(_so):
    return DynamicSection(needed=["libc10.so", "libstdc++.so.6", "libc.so.6"], rpaths=[])


def expected(tag="2141.130", minor="2.14", archs=()):
    return Expected(name="demo", version="1.0", build_tag=tag, torch_minor=minor, archs=list(archs))


def test_retag_round_trip(tmp_path):
    wheel = pack_wheel(tmp_path)
    assert parse_wheel_filename(wheel.name)[2] == ()
    tagged = retag(wheel, "2141.130")
    assert tagged.name == "demo-1.0-2141.130-cp311-cp311-linux_x86_64.whl"
    assert not wheel.exists(), "--remove deletes the untagged original"
    assert parse_wheel_filename(tagged.name)[2] == (2141, ".130")
    report = verify_wheel(tagged, expected(), list_archs=no_archs, read_dynamic=clean_dynamic)
    assert "WHEEL Build: 2141.130" in report

    # Retag again (another cell): name, WHEEL and RECORD move together; content is unchanged.
    again = retag(tagged, "280.129")
    assert again.name == "demo-1.0-280.129-cp311-cp311-linux_x86_64.whl" and not tagged.exists()
    verify_wheel(again, expected("280.129", "2.14"), list_archs=no_archs, read_dynamic=clean_dynamic)
    with zipfile.ZipFile(again) as zf:
        assert zf.read("demo/__init__.py") == b"VALUE = 42\n"
        assert "Build: 280.129" in zf.read("demo-1.0.dist-info/WHEEL").decode()


def test_retag_to_the_same_tag_is_a_no_op(tmp_path):
    tagged = retag(pack_wheel(tmp_path), "2141.130")
    before = tagged.read_bytes()
    assert retag(tagged, "2141.130") == tagged and tagged.read_bytes() == before


@pytest.mark.parametrize("bad", ["", "abc", "2141-130", "2141 130", None])
def test_retag_rejects_bad_tags(tmp_path, bad):
    with pytest.raises(ValueError, match="build_tag"):
        retag(pack_wheel(tmp_path), bad)


def test_retag_reports_a_broken_wheel(tmp_path):
    broken = tmp_path / "demo-1.0-cp311-cp311-linux_x86_64.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(RetagError, match="wheel tags"):
        retag(broken, "2141.130")


def test_verify_catches_a_bad_record_hash(tmp_path):
    tagged = retag(pack_wheel(tmp_path), "2141.130")
    tampered = tmp_path / "tampered" / tagged.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(tagged) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"VALUE = 43\n" if item.filename == "demo/__init__.py" else data)
    with pytest.raises(VerifyError, match="RECORD hash mismatch for demo/__init__.py"):
        verify_wheel(tampered, expected(), list_archs=no_archs, read_dynamic=clean_dynamic)


def test_verify_catches_a_wrong_build_tag(tmp_path):
    tagged = retag(pack_wheel(tmp_path), "280.129")
    with pytest.raises(VerifyError) as info:
        verify_wheel(tagged, expected("2141.130"), list_archs=no_archs, read_dynamic=clean_dynamic)
    assert "file name build tag '280.129', expected '2141.130'" in str(info.value)
    assert "WHEEL Build: ['280.129']" in str(info.value)


def test_verify_catches_a_file_renamed_by_hand(tmp_path):
    """flash-attn's anti-pattern: only the file name changes, WHEEL keeps no Build line."""
    wheel = pack_wheel(tmp_path)
    renamed = wheel.with_name("demo-1.0-2141.130-cp311-cp311-linux_x86_64.whl")
    wheel.rename(renamed)
    with pytest.raises(VerifyError, match=r"WHEEL Build: \[\]"):
        verify_wheel(renamed, expected(), list_archs=no_archs, read_dynamic=clean_dynamic)


@pytest.mark.parametrize("requires", [(), ("torch",), ("torch>=2.0",), ("torch==2.13.*",),
                                      ("torch==2.14.*", "torch<3")])
def test_verify_catches_an_unpinned_torch(tmp_path, requires):
    tagged = retag(pack_wheel(tmp_path, requires=requires), "2141.130")
    with pytest.raises(VerifyError, match=r"Requires-Dist for torch .* expected \['torch==2\.14\.\*'\]"):
        verify_wheel(tagged, expected(), list_archs=no_archs, read_dynamic=clean_dynamic)


def test_verify_checks_archs_of_each_extension(tmp_path):
    tagged = retag(pack_wheel(tmp_path, extension="_C.so"), "2141.130")

    def sass_80_only(so):
        assert so.name == "_C.so" and so.is_file()
        return {"sm_80"}, set()

    report = verify_wheel(tagged, expected(archs=["8.0"]), list_archs=sass_80_only, read_dynamic=clean_dynamic)
    assert "demo/_C.so: SASS for sm_80" in report
    with pytest.raises(VerifyError, match=r"no machine code for \['sm_90a'\]"):
        verify_wheel(tagged, expected(archs=["8.0", "9.0a"]), list_archs=sass_80_only, read_dynamic=clean_dynamic)
    with pytest.raises(VerifyError, match=r"unrequested \['sm_80'\]"):
        verify_wheel(tagged, expected(archs=["9.0a"]), list_archs=lambda so: ({"sm_80", "sm_90a"}, set()),
                     read_dynamic=clean_dynamic)
    with pytest.raises(VerifyError, match=r"no PTX for \['sm_120'\]"):
        verify_wheel(tagged, expected(archs=["12.0+PTX"]), list_archs=lambda so: ({"sm_120"}, set()),
                     read_dynamic=clean_dynamic)


def test_verify_rejects_build_machine_rpaths(tmp_path):
    tagged = retag(pack_wheel(tmp_path, extension="_C.so"), "2141.130")
    with pytest.raises(VerifyError, match="RPATH/RUNPATH.*/tmp/build"):
        verify_wheel(tagged, expected(archs=["8.0"]), list_archs=lambda so: ({"sm_80"}, set()),
                     read_dynamic=lambda so: DynamicSection(["libstdc++.so.6"], ["/tmp/build/lib"]))


def test_verify_rejects_a_statically_linked_libstdcxx(tmp_path):
    """What the lent H100's /opt/gcc wrapper produced: no NEEDED libstdc++ -> segfault on TORCH_CHECK."""
    tagged = retag(pack_wheel(tmp_path, extension="_C.so"), "2141.130")
    with pytest.raises(VerifyError, match="does not link libstdc"):
        verify_wheel(tagged, expected(archs=["8.0"]), list_archs=lambda so: ({"sm_80"}, set()),
                     read_dynamic=lambda so: DynamicSection(["libc10.so", "libgcc_s.so.1", "libc.so.6"], []))


def test_verify_requires_an_extension_when_archs_are_requested(tmp_path):
    tagged = retag(pack_wheel(tmp_path), "2141.130")
    with pytest.raises(VerifyError, match=r"no compiled extension"):
        verify_wheel(tagged, expected(archs=["8.0"]), list_archs=no_archs, read_dynamic=clean_dynamic)
