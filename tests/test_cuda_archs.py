"""Arch lists per CUDA version (scripts/cuda_archs.py) against the facts of wheels-and-cuda.md §4."""

from __future__ import annotations

import os
import shutil

import pytest

from scripts import cuda_archs, cuda_env
from scripts.cuda_archs import ArchError, default_arch_list, nvcc_real_targets, validate_arch_list
from scripts.matrix import load_matrix

from _wheel_build import load_root_setup


@pytest.mark.parametrize(
    "cuda, present, absent",
    [
        ("12.6", {"sm_80", "sm_90a", "sm_70"}, {"sm_100", "sm_120", "sm_103"}),
        ("12.8", {"sm_100", "sm_100a", "sm_101", "sm_120", "sm_120a"}, {"sm_103", "sm_121", "sm_110", "sm_100f"}),
        ("12.9", {"sm_103", "sm_103a", "sm_121", "sm_121a", "sm_100f", "sm_101"}, {"sm_110"}),
        ("13.0", {"sm_75", "sm_88", "sm_110", "sm_110a", "sm_121a"}, {"sm_72", "sm_70", "sm_61", "sm_101", "sm_101a"}),
    ],
)
def test_nvcc_targets_follow_the_toolkit_facts(cuda, present, absent):
    targets = nvcc_real_targets(cuda)
    assert present <= targets
    assert not (absent & targets)


def test_cuda_13_dropped_everything_below_turing():
    assert min(int(t[3:].rstrip("af")) for t in nvcc_real_targets("13.0")) == 75


@pytest.mark.parametrize(
    "cuda, expected",
    [
        ("12.6", ["8.0", "8.6", "8.9", "9.0a"]),
        ("12.8", ["8.0", "8.6", "8.9", "9.0a", "10.0", "12.0"]),
        ("12.9", ["8.0", "8.6", "8.9", "9.0a", "10.0", "10.3", "12.0", "12.1"]),
        ("13.0", ["8.0", "8.6", "8.9", "9.0a", "10.0", "10.3", "12.0", "12.1"]),
    ],
)
def test_sageattention_default_lists(cuda, expected):
    assert default_arch_list(cuda) == expected


@pytest.mark.parametrize(
    "cuda, expected",
    [("12.8", ["10.0a", "12.0a"]), ("12.9", ["10.0a", "10.3a", "12.0a", "12.1a"]),
     ("13.0", ["10.0a", "10.3a", "12.0a", "12.1a"])],
)
def test_sageattn3_default_lists(cuda, expected):
    assert default_arch_list(cuda, "sageattn3") == expected


def test_torch_filter_drops_only_what_that_torch_lacks():
    # torch 2.8's cpp_extension has no 10.3/12.1 (2.9 added them); 2.9 keeps the full 12.9 list.
    assert default_arch_list("12.9", "sageattention", "2.8.0") == ["8.0", "8.6", "8.9", "9.0a", "10.0", "12.0"]
    assert default_arch_list("12.9", "sageattn3", "2.8.0") == ["10.0a", "12.0a"]
    assert default_arch_list("12.9", "sageattention", "2.9.1") == default_arch_list("12.9")


def test_sageattn3_needs_cuda_12_8():
    with pytest.raises(ValueError, match="sageattn3.*12.8"):
        default_arch_list("12.6", "sageattn3")


def test_unknown_package_is_named():
    with pytest.raises(ValueError, match="package"):
        default_arch_list("12.8", "flash_attn")


def test_every_matrix_cell_default_list_is_buildable():
    """Each cell's default list must pass its own nvcc and torch (e.g. torch 2.6 has no 12.0)."""
    matrix = load_matrix()
    checked = 0
    for cell in matrix.cells:
        for package in cell.packages:
            archs = default_arch_list(cell.cuda, package, cell.torch)
            assert validate_arch_list(archs, cell.cuda, cell.torch) == archs, cell.name
            assert all(float(a.rstrip("a")) >= 8.0 for a in archs), "sm75 and older run the Triton path only"
            checked += 1
    assert checked >= len(matrix.cells)


def test_validate_names_the_nvcc_that_cannot_build():
    with pytest.raises(ArchError, match=r"7\.0 \(sm_70\) cannot be built by nvcc 13\.0"):
        validate_arch_list("8.0;7.0", "13.0")
    with pytest.raises(ArchError, match="sm_120.*nvcc 12.6"):
        validate_arch_list(["12.0"], "12.6")


def test_validate_names_the_torch_that_rejects():
    # nvcc 12.8 can build sm_120, but torch 2.6's cpp_extension does not know "12.0".
    with pytest.raises(ArchError, match=r"unknown to torch 2\.6\.0"):
        validate_arch_list("8.0;12.0", "12.8", "2.6.0")
    with pytest.raises(ArchError, match="torch 2.14.1"):
        validate_arch_list("10.1", "12.9", "2.14.1")  # renamed 11.0 from torch 2.9 on
    assert validate_arch_list("8.0;12.0", "12.8", "2.7.0") == ["8.0", "12.0"]


@pytest.mark.parametrize("bad", ["sm_80", "80", "Ampere", "8.0.1", "compute_90a"])
def test_parse_rejects_non_torch_syntax(bad):
    with pytest.raises(ArchError, match="MAJOR.MINOR"):
        cuda_archs.parse_arch_list(bad)


def test_parse_accepts_torch_separators():
    assert cuda_archs.parse_arch_list(" 8.0;9.0a, 12.0+PTX 10.0 ") == ["8.0", "9.0a", "12.0+PTX", "10.0"]
    with pytest.raises(ArchError, match="empty"):
        cuda_archs.parse_arch_list(" ; ")


def test_gencode_flags():
    assert cuda_archs.gencode_flags(["8.0", "9.0a", "12.0+PTX"]) == [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_120,code=sm_120",
        "-gencode=arch=compute_120,code=compute_120",
    ]


def test_bad_cuda_version_is_a_value_error():
    with pytest.raises(ValueError, match="cuda"):
        nvcc_real_targets("thirteen")
    with pytest.raises(ValueError, match="older than 12.0"):
        nvcc_real_targets("11.8")


def test_table_matches_the_installed_nvcc():
    """The plain sm_XY targets of our table equal what the local nvcc lists (a/f variants aside)."""
    nvcc, _ = cuda_env.find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on this machine")
    version = cuda_env.nvcc_version(nvcc)
    listed = cuda_env.nvcc_gpu_codes(nvcc)
    if version is None or listed is None:
        pytest.skip("this nvcc does not report --version/--list-gpu-code")
    plain = {t for t in nvcc_real_targets(version) if not t.endswith(("a", "f"))}
    assert plain == listed


def test_table_matches_the_installed_torch(monkeypatch):
    """Every arch in our union of torch tables is accepted/rejected exactly as this torch does."""
    torch = pytest.importorskip("torch")
    from torch.utils import cpp_extension

    if not hasattr(cpp_extension, "_get_cuda_arch_flags"):
        pytest.skip("this torch has no _get_cuda_arch_flags")
    ours = cuda_archs.torch_accepted_archs(torch.__version__)
    candidates = cuda_archs.torch_accepted_archs("2.14") | cuda_archs.torch_accepted_archs("2.7")
    for arch in sorted(candidates):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch)
        try:
            cpp_extension._get_cuda_arch_flags()
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == (arch in ours), arch


def test_cli_prints_the_default(capsys):
    assert cuda_archs.main(["12.8", "--package", "sageattn3"]) == 0
    assert capsys.readouterr().out.strip() == "10.0a;12.0a"


@pytest.mark.parametrize("argv, message", [(["thirteen"], "MAJOR.MINOR"), (["11.8"], "older than 12.0"),
                                           (["12.6", "--package", "sageattn3"], "needs CUDA >= 12.8"),
                                           (["12.9", "--torch", "2.5.0"], "older than 2.6")])
def test_cli_bad_input_is_one_line_not_a_traceback(capsys, argv, message):
    assert cuda_archs.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cuda_archs: ") and message in err and err.count("\n") == 1


@pytest.mark.skipif(shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"), reason="no nvcc")
def test_default_list_for_the_installed_nvcc_is_accepted_by_it():
    nvcc, _ = cuda_env.find_nvcc()
    version = cuda_env.nvcc_version(nvcc) if nvcc else None
    listed = cuda_env.nvcc_gpu_codes(nvcc) if nvcc else None
    if not version or not listed:
        pytest.skip("nvcc does not report its targets")
    for arch in default_arch_list(version):
        assert cuda_archs.arch_to_sm(arch).rstrip("af") in listed


# ---- per-file archs of the mma.sync attention kernels (setup.py ARCH_GROUPS) ------------------


def test_kernel_family_archs():
    from scripts.cuda_archs import kernel_family_archs

    full = ["8.0", "8.6", "8.9", "9.0a", "10.0", "10.3", "12.0", "12.1"]
    assert kernel_family_archs(full, "sm80") == ["8.0", "8.6"]
    assert kernel_family_archs(full, "sm89") == ["8.9", "10.0", "10.3", "12.0", "12.1"]
    assert kernel_family_archs(["8.0"], "sm89") == []  # CI's build: no FP8 kernel compiled
    assert kernel_family_archs(["9.0a"], "sm80") == [] and kernel_family_archs(["9.0a"], "sm89") == []
    assert kernel_family_archs(["8.9"], "sm80") == ["8.9"]  # sm89-only builds keep the FP16 kernel
    # The H100 test build: PTX survives the selection.
    assert kernel_family_archs(["8.0+PTX", "8.9+PTX"], "sm80") == ["8.0+PTX"]
    assert kernel_family_archs(["8.0+PTX", "8.9+PTX"], "sm89") == ["8.9+PTX"]
    assert kernel_family_archs(full, "sm90") == ["9.0a"]
    assert kernel_family_archs(["9.0", "8.9"], "sm90") == []  # wgmma needs the arch-specific 9.0a
    assert kernel_family_archs(["8.0", "8.9"], "sm90") == []
    with pytest.raises(ValueError, match="family"):
        kernel_family_archs(full, "sm70")


def test_generated_instantiations_are_up_to_date():
    from scripts import generate_kernels

    assert generate_kernels.main(["--check"]) == 0, "run `python -m scripts.generate_kernels`"
    assert len(generate_kernels.sources("sm80")) == 6 and len(generate_kernels.sources("sm89")) == 6
    assert len(generate_kernels.sources("sm90")) == 2 and len(generate_kernels.sources("sm90", (64,))) == 1
    assert all("_hd128_" in s for s in generate_kernels.sources("sm80", (128,)))


def test_head_dims_dev_switch():
    setup = load_root_setup()

    assert setup.head_dims_from_env(None) == (64, 128) and setup.head_dims_from_env("") == (64, 128)
    assert setup.head_dims_from_env("128") == (128,)
    with pytest.raises(ValueError, match="SAGEATTN_HEAD_DIMS"):
        setup.head_dims_from_env("96")
