"""Autotune configurations for the Triton attention kernels, in one place.

The set is bounded (a handful of configs) and the autotuner is keyed on the kernel's
compile-time switches only (head dim, causal, P·V mode, varlen, load path, V storage order; Triton
adds the tensor dtypes itself), never on sequence length or batch, so a model tunes once per
head dim / mask / dtype, not on every call.

Under ``TRITON_INTERPRET=1`` (CPU tests) a single small config is used: the interpreter runs every
block op in numpy, so autotuning there would only multiply test time.
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


def attention_configs() -> list[triton.Config]:
    """Configs the attention kernels autotune over (a single fixed one in the interpreter)."""
    if interpreting():
        return [_cfg(INTERPRETER_BLOCK_M, INTERPRETER_BLOCK_N, 4, 1)]
    return list(_CONFIGS)


#: Autotune key: the kernels' constexpr/argument names whose values select a config.
AUTOTUNE_KEY = ["HEAD_DIM", "IS_CAUSAL", "PV_MODE", "IS_VARLEN", "USE_TMA", "V_TRANSPOSED"]

#: Passed as ``prune_configs_by`` to ``triton.autotune``.
PRUNE = {"early_config_prune": _prune}
