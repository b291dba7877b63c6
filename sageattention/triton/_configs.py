"""Autotune configurations for the Triton attention kernels, in one place.

The set is bounded (a handful of configs) and the autotuner is keyed on the kernel's
compile-time switches only (head dim, causal, P·V mode, varlen, load path, V storage order; Triton
adds the tensor dtypes itself), never on sequence length or batch, so a model tunes once per
head dim / mask / dtype, not on every call.

Under ``TRITON_INTERPRET=1`` (CPU tests) a single small config is used: the interpreter runs every
block op in numpy, so autotuning there would only multiply test time.

``SAGEATTN_TRITON_CONFIG=BLOCK_M,BLOCK_N,WARPS,STAGES`` (e.g. ``64,64,4,2``) pins the kernels to one
of ``_CONFIGS`` instead of autotuning: each new autotune key then compiles one config, not seven.
Unset, empty or ``autotune``: autotune. Anything else raises ``ValueError`` naming the variable, and
only configs of ``_CONFIGS`` are accepted, so a pinned run never tests a config users cannot get.
The kernels read it when their module is imported (``triton.autotune`` takes the list then): set it
before importing ``sageattention.triton.attn_*``. tests/conftest.py pins ``TEST_CONFIG`` on a GPU;
tests/test_triton_configs.py runs every config once. A pinned config serves every head dim: the
autotuner's rule that head dim 256 keeps only the 64x64 tiles (``_prune``) is not applied to it.
The interpreter ignores the pin (its config is not one of ``_CONFIGS``) but still validates it.
"""

from __future__ import annotations

import os

import triton

#: One fixed config for the interpreter. BLOCK_M=32 / BLOCK_N=16 keeps the numpy work per program
#: small while the test lengths (17, 65, 130) still cross several query and key blocks and their tails.
INTERPRETER_BLOCK_M = 32
INTERPRETER_BLOCK_N = 16


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _cfg(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


# Candidate configs, pruned by a sweep of 12 shapes on the H100 (torch 2.11, Triton 3.6; hd128,
# non-causal, B=4, H=32, L=16K, tuned kernel-only; numbers in .devout/run2/sweep.txt and README):
#   tensor-descriptor loads: (64, 128, 4 warps, 2 stages) 596 TOPS fp16 P·V, (64, 128, 4, 3) 666
#   TOPS fp8 P·V; (128, 64, 4, 3) 568 fp16; the 8-warp 128x128 tiles 480-500.
#   pointer loads (pre-sm90 path): (128, 128, 4, 2) 491 fp16; (64, 128, 4, 3) 644 fp8.
# Why one warpgroup (4 warps) wins: a 64-row tile is exactly one wgmma M, so the fp32 score and
# output tiles stay in registers while BLOCK_N=128 amortizes the per-block rescale of O over twice
# the scores. The 64x64 configs stay for small/odd shapes and pre-Hopper GPUs.
# Known cost of not keying on L: the first call's length picks the config. Tuned at L=1K the
# fp16 P·V kernel keeps (128, 64, 4, 3) and reaches 535 TOPS at 16K instead of 586 (H100, run3
# vs run2 in .devout/); a user who cares can warm up at their production length.
_CONFIGS = [
    _cfg(64, 128, 4, 2),
    _cfg(64, 128, 4, 3),
    _cfg(128, 64, 4, 3),
    _cfg(128, 128, 4, 2),
    _cfg(128, 128, 8, 3),
    _cfg(64, 64, 4, 2),
    _cfg(64, 64, 4, 3),
]


def _prune(configs, named_args, **kwargs):
    """Drop configs that cannot fit: a 256-wide head needs the 64-row Q tile (register budget)."""
    head_dim = named_args["HEAD_DIM"] if "HEAD_DIM" in named_args else kwargs.get("HEAD_DIM")
    if head_dim is not None and head_dim >= 256:
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= 64 and c.kwargs["BLOCK_N"] <= 64]
        if kept:
            return kept
    return configs


#: Environment variable that pins the attention kernels to one config (module docstring).
CONFIG_ENV = "SAGEATTN_TRITON_CONFIG"

#: The config tests/conftest.py pins on a GPU. Why this one: it is the config the autotuner keeps
#: for head dim 256 (``_prune``), so one config serves every head dim, and it is the smallest of
#: ``_CONFIGS``. Compiled with Triton 3.8 for sm80/86/89/90/100/120 (no GPU needed; causal, LSE,
#: head dims 64/128/256, fp16 and FP8 P·V, both load paths): at most 58 KB of shared memory on
#: sm80-sm89 and sm120 (limit 99 KB on sm86/89/120), at most 116 KB on sm90/sm100 (limit 227 KB).
#: For sm75 Triton 3.8 fails to compile it (in TritonGPUAccelerateMatmul, the INT8 dot), as it
#: would any config: README notes sm75 needs triton<3.3.
TEST_CONFIG = "64,64,4,2"


def config_name(config: triton.Config) -> str:
    """``"BLOCK_M,BLOCK_N,WARPS,STAGES"``, the spelling ``SAGEATTN_TRITON_CONFIG`` takes."""
    return f"{config.kwargs['BLOCK_M']},{config.kwargs['BLOCK_N']},{config.num_warps},{config.num_stages}"


def pinned_config() -> triton.Config | None:
    """The config ``SAGEATTN_TRITON_CONFIG`` pins, or None (unset, empty or ``autotune``).

    Raises ``ValueError`` naming the variable when the value is malformed or not in ``_CONFIGS``.
    """
    value = os.environ.get(CONFIG_ENV, "").strip()
    if value in ("", "autotune"):
        return None
    known = ", ".join(config_name(c) for c in _CONFIGS)
    parts = value.replace(" ", "").split(",")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(
            f"{CONFIG_ENV}={value!r}: expected BLOCK_M,BLOCK_N,WARPS,STAGES (four integers, e.g. "
            f"{TEST_CONFIG}) or 'autotune'; known configs: {known}"
        )
    for config in _CONFIGS:
        if config_name(config) == ",".join(str(int(p)) for p in parts):
            return config
    raise ValueError(f"{CONFIG_ENV}={value!r} is not one of the autotuned configs ({known})")


def attention_configs() -> list[triton.Config]:
    """Configs the attention kernels autotune over: ``_CONFIGS``, or the one that
    ``SAGEATTN_TRITON_CONFIG`` pins, or a single fixed one in the interpreter."""
    pinned = pinned_config()  # validated even where it is not used
    if interpreting():
        return [_cfg(INTERPRETER_BLOCK_M, INTERPRETER_BLOCK_N, 4, 1)]
    if pinned is not None:
        return [pinned]
    return list(_CONFIGS)


def describe_configs() -> str:
    """One line saying which configs the attention kernels use here (test headers, GPU logs)."""
    if interpreting():
        return (f"Triton attention config: interpreter, fixed BLOCK_M={INTERPRETER_BLOCK_M}, "
                f"BLOCK_N={INTERPRETER_BLOCK_N} ({CONFIG_ENV} ignored)")
    pinned = pinned_config()
    if pinned is not None:
        return f"Triton attention config: pinned by {CONFIG_ENV}={config_name(pinned)} (BLOCK_M,BLOCK_N,WARPS,STAGES)"
    return f"Triton attention config: autotuned over {len(_CONFIGS)} configs ({CONFIG_ENV} unset or 'autotune')"


#: Autotune key: the kernels' constexpr/argument names whose values select a config.
AUTOTUNE_KEY = ["HEAD_DIM", "IS_CAUSAL", "PV_MODE", "IS_VARLEN", "USE_TMA", "V_TRANSPOSED"]

#: Passed as ``prune_configs_by`` to ``triton.autotune``.
PRUNE = {"early_config_prune": _prune}
