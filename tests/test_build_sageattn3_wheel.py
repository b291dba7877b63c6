"""The real sageattn3 build: NVFP4 kernels for sm_100a and sm_120a through ``python -m scripts.build``.

Marker ``build``. Skips without nvcc or a matching cell, unless ``SAGEATTN_REQUIRE_BUILD_TEST=1``
(CI sets it). Compiles both Blackwell archs (the hardware FP4 MMA for sm_120a, the software one for
sm_100a), one head dim (``SAGEATTN3_HEAD_DIMS=128``) to keep the 2-core compile near a minute;
retags and verifies like sageattention's wheel; checks the SASS holds the block-scaled FP4 MMA
for sm_120a; installs the wheel into a fresh venv and imports it. Nothing executes on a Blackwell
GPU here (there is none): compiled, never run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scripts.wheel_verify import Expected, verify_wheel

from _wheel_build import build_prerequisites, install_in_fresh_venv, run_probe, sass_text

REPO = Path(__file__).resolve().parent.parent
BUILD_ARCHS = "10.0a;12.0a"


def _sass_mnemonics(so: Path, arch: str) -> set[str]:
    """MMA mnemonics in the SASS of ``arch``."""
    return set(re.findall(r"\b([A-Z]*MMA[A-Z0-9_.]*)", sass_text(so, arch)))


@pytest.mark.build
def test_sageattn3_build_retag_verify_sass_and_import(tmp_path, capsys):
    torch, cell, site_of_torch = build_prerequisites("sageattn3")

    dist = tmp_path / "dist"
    env = {**os.environ, "SAGEATTN3_HEAD_DIMS": "128"}
    env.pop("SAGEATTN3_EMULATED_MMA_BUILD", None)
    started = time.monotonic()
    with capsys.disabled():
        print(f"\n== real build of sageattn3 for {cell.name}, archs {BUILD_ARCHS}, head dim 128", flush=True)
        done = subprocess.run([sys.executable, "-m", "scripts.build", "--cell", cell.name, "--package", "sageattn3",
                               "--archs", BUILD_ARCHS, "--dist-dir", str(dist)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(done.stdout, end="", flush=True)
    seconds = time.monotonic() - started
    assert done.returncode == 0, "scripts.build failed (output above)"
    name = f"sageattn3-1.0.0-{cell.build_tag}-{cell.python_tag}-{cell.python_tag}-linux_x86_64.whl"
    wheel = dist / cell.name / name
    assert wheel.is_file() and f"retagged -> {name}" in done.stdout and "verify: ok" in done.stdout
    report = verify_wheel(wheel, Expected("sageattn3", "1.0.0", cell.build_tag, cell.torch_minor,
                                          BUILD_ARCHS.split(";")))
    assert any("SASS for sm_100a sm_120a" in line for line in report), report

    # The instruction each arch really got: sm_120a the block-scaled FP4 MMA, sm_100a fp16 HMMA.
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.startswith("sageattn3/_C") and n.endswith(".so"))
        so = Path(zf.extract(member, tmp_path / "unpacked"))
    sm120 = _sass_mnemonics(so, "sm_120a")
    sm100 = _sass_mnemonics(so, "sm_100a")
    assert any(m.startswith("OMMA.SF") and "E2M1" in m for m in sm120), sm120
    assert any(m.startswith("HMMA") for m in sm100) and not any(m.startswith("OMMA") for m in sm100), sm100

    venv, fresh_python = install_in_fresh_venv(wheel, tmp_path, site_of_torch)
    probe = textwrap.dedent(
        f"""
        import torch, sageattn3
        from sageattn3 import _build_info, _ops, sageattn3_blackwell
        assert sageattn3.__file__.startswith({str(venv)!r}), sageattn3.__file__
        assert _build_info.TORCH_CUDA_ARCH_LIST == {BUILD_ARCHS!r} and _build_info.HEAD_DIMS == (128,)
        assert _build_info.EMULATED_MMA_BUILD is False
        assert _ops.kernel_available(), _ops.missing_build_reason()
        assert hasattr(torch.ops.sageattn3, "attn_fwd") and hasattr(torch.ops.sageattn3, "quant_nvfp4")
        q = torch.randn(1, 2, 10, 64, dtype=torch.float16)
        try:
            sageattn3_blackwell(q, q, q)
        except RuntimeError as exc:
            print("no Blackwell GPU: clear error:", exc)
        out = sageattn3_blackwell(q, q, q, allow_reference=True)
        print("imported", sageattn3.__file__, "archs", _build_info.TORCH_CUDA_ARCH_LIST, "ref out", tuple(out.shape))
        """
    )
    ran = run_probe(fresh_python, probe, tmp_path, ("PYTHONPATH", "TRITON_INTERPRET", "SAGEATTN3_ALLOW_REFERENCE"))
    with capsys.disabled():
        print(ran.stdout, end="")
        print(f"== wheel {wheel.name}: {wheel.stat().st_size} bytes, built+retagged+verified in {seconds:.0f} s")
        print(f"== SASS MMA: sm_120a {sorted(sm120)}; sm_100a {sorted(sm100)}", flush=True)
    assert ran.returncode == 0, ran.stdout
    assert "clear error" in ran.stdout or torch.cuda.is_available()
