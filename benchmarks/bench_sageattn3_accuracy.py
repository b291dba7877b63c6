"""Accuracy of the SageAttention3 reference (NVFP4 emulation) against float64 attention.

Prints, for the inputs of ``sageattn3.accuracy.make_inputs`` ("randn" and "sink"), causal and not:

* full error: the reference (NVFP4 Q, K, V and P) vs exact float64 attention;
* P-only error: the same reference vs itself with P̃ unquantized, which isolates the effect of the
  P quantization scheme (direct vs two-level, SageAttention3 paper §3.2, Table 1b).

These are the numbers behind ``sageattn3.accuracy.ACCURACY_FLOORS`` and the README. CPU only::

    python benchmarks/bench_sageattn3_accuracy.py [--seqlen 1024] [--head-dim 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (_REPO_ROOT, _REPO_ROOT / "sageattention3_blackwell"):
    if str(path) not in sys.path:
        sys.path.append(str(path))

from sageattn3.accuracy import make_inputs  # noqa: E402
from sageattn3.reference import sageattn3_reference  # noqa: E402

from sageattention.testing.metrics import cosine_similarity, relative_l1  # noqa: E402
from sageattention.testing.reference import attention_ref  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seqlen", type=int, default=1024)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args(argv)
    shape = (1, args.heads, args.seqlen, args.head_dim)
    print(f"# sageattn3 reference accuracy, shape {shape}, float32 emulation vs float64")
    print(f"{'input':<6} {'causal':>6} {'P quant':<10} {'cos full':>9} {'L1 full':>8} {'cos P-only':>11} {'L1 P-only':>10}")
    for kind in ("randn", "sink"):
        q, k, v = make_inputs(kind, shape)
        for causal in (False, True):
            exact, _ = attention_ref(q, k, v, is_causal=causal)
            unquantized_p, _ = sageattn3_reference(q, k, v, is_causal=causal, p_quant="none")
            for mode in ("direct", "two_level"):
                out, _ = sageattn3_reference(q, k, v, is_causal=causal, p_quant=mode)
                print(
                    f"{kind:<6} {int(causal):>6} {mode:<10} {cosine_similarity(out, exact):9.5f} "
                    f"{relative_l1(out, exact):8.4f} {cosine_similarity(out, unquantized_p):11.6f} "
                    f"{relative_l1(out, unquantized_p):10.5f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
