"""Test session setup shared by every test file.

* Puts the repository root on ``sys.path`` so tests import ``scripts.*`` and the in-tree
  ``sageattention`` package without installing it; the in-tree ``sageattn3`` too, unless a built
  ``sageattn3`` wheel is installed (its compiled kernels are then what tests/test_sageattn3_kernel.py runs).
* Without a CUDA device, sets ``TRITON_INTERPRET=1`` *before* anything imports triton (the
  interpreter flag is read when triton's JIT decorates the kernels), so the Triton kernels run on
  CPU tensors. This module is imported by pytest before any test module, which makes it the one
  place where that ordering is guaranteed.
* With a CUDA device, pins the Triton attention kernels to one config
  (``SAGEATTN_TRITON_CONFIG=64,64,4,2``, ``sageattention/triton/_configs.py::TEST_CONFIG``) unless
  the variable is already set (``SAGEATTN_TRITON_CONFIG=autotune`` restores autotuning): every new
  autotune key would otherwise compile all seven configs, and the GPU suite would not fit a
  10-minute call. Same ordering reason: the kernels read it when their module is imported.
  tests/test_triton_configs.py still runs every config once. The report header says which configs
  are in use.
* ``gpu``-marked tests skip cleanly, with a reason, when no CUDA device exists.
* Random inputs are fresh per test (no fixed global seed that could hide a bug), but each test's
  seed is printed in its report and can be forced with ``SAGEATTN_TEST_SEED`` to reproduce a failure.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # sageattention, scripts
    sys.path.insert(0, str(REPO_ROOT))
# sageattn3 from the source tree, unless a built sageattn3 is installed: then that one (with its
# compiled _C, e.g. the H100's SAGEATTN3_EMULATED_MMA_BUILD wheel) is the one under test.
if importlib.util.find_spec("sageattn3") is None and str(REPO_ROOT / "sageattention3_blackwell") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "sageattention3_blackwell"))


#: The real wheel tests/test_build_wheel.py built in this session; tests/test_conda_channel.py
#: assembles a conda package from it (test_build_wheel.py runs first: files run in name order).
BUILT_WHEEL = pytest.StashKey[Path]()


def _cuda_available() -> bool:
    # torch.cuda.is_available() does not initialise a CUDA context, and importing torch does not
    # import triton, so the interpreter flag below is still set in time.
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


HAS_CUDA = _cuda_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if HAS_CUDA:
    from sageattention.triton import _configs  # imports triton, but decorates no kernel

    os.environ.setdefault(_configs.CONFIG_ENV, _configs.TEST_CONFIG)


def pytest_report_header(config):
    from sageattention.triton._configs import describe_configs

    if INTERPRETING:
        return ["sageattention: no CUDA device; Triton kernels run in the interpreter (TRITON_INTERPRET=1) on CPU tensors",
                f"sageattention: {describe_configs()}"]
    import torch

    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    return [f"sageattention: CUDA device {name} (sm{major}{minor})", f"sageattention: {describe_configs()}"]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none found; marker 'gpu')")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def device() -> str:
    """"cuda" when a GPU exists, else "cpu" (kernels then run in the Triton interpreter)."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def random_seed(request):
    """Seed torch/random per test from fresh entropy (or ``SAGEATTN_TEST_SEED``); the seed is
    attached to the test report so a failure can be replayed."""
    import torch

    env = os.environ.get("SAGEATTN_TEST_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(2**31)
    torch.manual_seed(seed)
    random.seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield seed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            report.sections.append(("seed", f"reproduce with SAGEATTN_TEST_SEED={seeds[0]}"))
