"""Accuracy model of SageAttention3: the test inputs and the one table of measured floors.

The reference (:mod:`sageattn3.reference`) is what the FP4 kernels must match; these floors say how
far the *reference itself* is from exact float64 attention on two synthetic inputs, so a change to
the quantization emulation that loses accuracy fails a test. Numbers come from
``python benchmarks/bench_sageattn3_accuracy.py`` (CPU, torch 2.14.1, seeds below); each floor
leaves a margin of about 20 % of the measured error.

Inputs (``make_inputs``):

* ``"randn"``: Q, K, V ~ N(0, 1). Scores are flat, so P̃ values within a key tile are of similar
  size and the P scale range hardly matters: direct and two-level P quantization are close here.
* ``"sink"``: ``"randn"`` plus one "attention sink" key that every query scores about
  ``SINK_LOGIT`` above the rest (as the first token does in LLMs). All other P̃ values then sit
  near ``exp(-SINK_LOGIT)``, their 1×16 block scales fall into the subnormal end of E4M3 under
  direct quantization — the failure two-level quantization fixes (paper §3.2).
"""

from __future__ import annotations

import torch

SINK_LOGIT = 9.0

#: (input, p_quant) -> (min cosine similarity, max relative L1), full reference vs float64.
ACCURACY_FLOORS = {
    # measured, non-causal / causal: cos 0.9819 / 0.9850, rel-L1 0.189 / 0.182
    ("randn", "two_level"): (0.978, 0.23),
    # measured: cos 0.9817 / 0.9849, rel-L1 0.190 / 0.183
    ("randn", "direct"): (0.978, 0.23),
    # measured: cos 0.9920 / 0.9928, rel-L1 0.121 / 0.114
    ("sink", "two_level"): (0.990, 0.15),
    # measured: cos 0.9920 / 0.9927, rel-L1 0.125 / 0.119
    ("sink", "direct"): (0.990, 0.15),
}

#: (min cosine, max relative L1) of the reference with every quantizer off vs float64: float32
#: rounding only (measured worst over the shapes of test_unquantized_reference_is_exact_attention:
#: cosine 1 - 3e-13, rel-L1 6.8e-7 for the output, 1.6e-7 for the LSE).
EXACT_FLOORS = (1 - 1e-6, 1e-5)

#: On "sink", the P-only error (vs the same reference with unquantized P̃) of direct quantization
#: must be at least this many times that of two-level quantization (measured rel-L1 0.0352 vs 0.0034
#: non-causal, 0.0348 vs 0.0046 causal: 7.5-10×).
TWO_LEVEL_MIN_GAIN = 5.0


def make_inputs(kind: str, shape=(1, 4, 1024, 128), seed: int = 0, dtype=torch.float32):
    """Deterministic ``(q, k, v)`` ``[B, H, L, D]`` for ``kind`` in {"randn", "sink"} (CPU)."""
    if kind not in ("randn", "sink"):
        raise ValueError(f"kind must be 'randn' or 'sink', got {kind!r}")
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*shape, generator=gen) for _ in range(3))
    if kind == "sink":
        d = shape[-1]
        direction = torch.randn(d, generator=gen)
        direction /= direction.norm()
        q += 3.0 * direction
        # q·k_0 gains 3 · SINK_LOGIT · sqrt(d) / 3 → SINK_LOGIT after the d ** -0.5 softmax scale.
        k[:, :, 0] += SINK_LOGIT * d ** 0.5 / 3.0 * direction
    return q.to(dtype), k.to(dtype), v.to(dtype)
