"""Configs of the Triton attention kernels (``sageattention.triton._configs``).

Two parts. The ``SAGEATTN_TRITON_CONFIG`` switch: which values pin which config, and that a bad
value raises naming the variable. And every config of ``_CONFIGS``, run once per P·V kernel on a
shape that is not a multiple of any tile (L=300) against the emulation and the float64 reference
(the helpers of the kernels' own test files, so the same tolerance table): tests/conftest.py pins
one config on a GPU, so this is where the others still run. The kernel is made to use one config
by giving its autotuner that single config (``Autotuner.configs``); each test asserts the launch
really used it. In the interpreter ``num_warps``/``num_stages`` do nothing, so only the first config
of each tile shape runs there (four shapes, ~0.2 s each); the rest need a GPU.
"""

from __future__ import annotations

import pytest
import torch

from sageattention.testing.emulation import make_inputs
from sageattention.triton import _configs
from sageattention.triton._configs import CONFIG_ENV, TEST_CONFIG, attention_configs, config_name, interpreting
from sageattention.triton.attn_qk_int8_pv_fp8 import MIN_FP8_CAPABILITY
from sageattention.triton.attn_qk_int8_pv_fp16 import _attn_qk_int8_kernel, attn_qk_int8_pv_fp16
from test_attn_qk_int8_pv_fp8_triton import run_and_check as run_and_check_fp8
from test_attn_qk_int8_pv_fp16_triton import check as check_fp16

NAMES = [config_name(c) for c in _configs._CONFIGS]


def _kept_for_head_dim(head_dim: int) -> list[str]:
    return [config_name(c) for c in _configs._prune(_configs._CONFIGS, {"HEAD_DIM": head_dim})]


# ---------------------------------------------------------------------------------------------
# The switch.


@pytest.fixture
def compiled(monkeypatch):
    """``attention_configs()`` as on a GPU (the interpreter branch off)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    return monkeypatch


@pytest.mark.parametrize("name", NAMES)
def test_pin_selects_that_config(compiled, name):
    compiled.setenv(CONFIG_ENV, name)
    assert [config_name(c) for c in attention_configs()] == [name]


@pytest.mark.parametrize("value", [None, "", "autotune", " autotune "])
def test_unset_empty_or_autotune_autotunes_over_all(compiled, value):
    if value is None:
        compiled.delenv(CONFIG_ENV, raising=False)
    else:
        compiled.setenv(CONFIG_ENV, value)
    assert [config_name(c) for c in attention_configs()] == NAMES
    assert "autotuned over 7 configs" in _configs.describe_configs()


def test_spaces_and_leading_zeros_are_accepted(compiled):
    compiled.setenv(CONFIG_ENV, " 64, 064 ,4,2")
    assert [config_name(c) for c in attention_configs()] == ["64,64,4,2"]
    assert "pinned by SAGEATTN_TRITON_CONFIG=64,64,4,2" in _configs.describe_configs()


@pytest.mark.parametrize("value,match", [
    ("64x64", "expected BLOCK_M,BLOCK_N,WARPS,STAGES"),
    ("64,64,4", "expected BLOCK_M,BLOCK_N,WARPS,STAGES"),
    ("64,64,4,2,1", "expected BLOCK_M,BLOCK_N,WARPS,STAGES"),
    ("64,64,four,2", "expected BLOCK_M,BLOCK_N,WARPS,STAGES"),
    ("-64,64,4,2", "expected BLOCK_M,BLOCK_N,WARPS,STAGES"),
    ("32,32,4,2", "not one of the autotuned configs"),  # well-formed, but users never get it
    ("64,64,8,2", "not one of the autotuned configs"),
])
def test_bad_value_names_the_variable(compiled, value, match):
    compiled.setenv(CONFIG_ENV, value)
    with pytest.raises(ValueError, match=match) as err:
        attention_configs()
    assert CONFIG_ENV in str(err.value) and "64,128,4,2" in str(err.value)  # lists the known ones


def test_interpreter_keeps_its_config_but_validates_the_pin(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(CONFIG_ENV, "128,128,8,3")
    (config,) = attention_configs()
    assert (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]) == (_configs.INTERPRETER_BLOCK_M, _configs.INTERPRETER_BLOCK_N)
    assert "ignored" in _configs.describe_configs()
    monkeypatch.setenv(CONFIG_ENV, "128x128")
    with pytest.raises(ValueError, match=CONFIG_ENV):
        attention_configs()


def test_test_config_serves_every_head_dim():
    """The conftest pin is a config users get, and the one the autotuner keeps for head dim 256."""
    assert TEST_CONFIG in NAMES
    assert TEST_CONFIG in _kept_for_head_dim(256)


def test_kernel_was_decorated_with_the_configs_in_force():
    """conftest.py set the pin before the kernel module was imported (else a GPU run autotunes)."""
    assert [config_name(c) for c in _attn_qk_int8_kernel.configs] == [config_name(c) for c in attention_configs()]


# ---------------------------------------------------------------------------------------------
# Every config, once per kernel.


def _fp8_capable() -> bool:
    if interpreting():
        return True
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= MIN_FP8_CAPABILITY


#: (head dim, causal): both head dims of the benchmark table, both mask paths; head dim 256 only
#: for the configs the autotuner keeps there (``_prune``).
CASES = [(128, False), (64, True), (256, True)]


def _config_params():
    first_of_tiles: dict[tuple[int, int], str] = {}
    for config in _configs._CONFIGS:
        name = config_name(config)
        first = first_of_tiles.setdefault((config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]), name)
        marks = []
        if first != name:
            marks = [pytest.mark.gpu, pytest.mark.skipif(
                interpreting(), reason=f"the interpreter ignores num_warps/num_stages: same tiles as {first}, which runs")]
        for head_dim, causal in CASES:
            if name in _kept_for_head_dim(head_dim):
                yield pytest.param(config, head_dim, causal, marks=marks,
                                   id=f"{name.replace(',', 'x')}-hd{head_dim}-{'causal' if causal else 'full'}")


@pytest.mark.parametrize("kernel", [
    "fp16",
    pytest.param("fp8", marks=pytest.mark.skipif(not _fp8_capable(), reason="Triton FP8 dot needs sm89+ (MIN_FP8_CAPABILITY)")),
])
@pytest.mark.parametrize("config,head_dim,causal", list(_config_params()))
def test_every_config_matches_the_reference(device, monkeypatch, kernel, config, head_dim, causal):
    monkeypatch.setattr(_attn_qk_int8_kernel, "configs", [config])
    if kernel == "fp16":
        inputs = make_inputs(device, b=1, hq=2, hkv=2, lq=300, lk=300, d=head_dim)
        q, k, v, qi, qs, ki, ks, km = inputs
        out, lse = attn_qk_int8_pv_fp16(qi, ki, v, qs, ks, is_causal=causal, return_lse=True)
        assert _attn_qk_int8_kernel.best_config is config
        check_fp16(out, lse, inputs, layout="HND", causal=causal, pv_accum_dtype="fp32")
    else:
        # V token-contiguous, as the API feeds it (the FP8 MMA's operand order).
        run_and_check_fp8(device, lq=300, lk=300, hq=2, hkv=2, d=head_dim, causal=causal, token_major_v=True,
                          check_reference="table")
        assert _attn_qk_int8_kernel.best_config is config
