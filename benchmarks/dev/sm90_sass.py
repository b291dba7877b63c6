"""The sm90 kernel's KV loop as ptxas schedules it, per schedule variant, without a GPU.

Why: the softmax of S_j should run while R_{j-1} = P_{j-1} V_{j-1} is still on the tensor cores
(qk_int8_attn_sm90.cuh), but ptxas decides where the wait for R_{j-1} (``WARPGROUP.DEPBAR.LE gsb0,
0x0``) lands. This prints, for the loop of every kernel in an instantiation (all variants with
``-D SAGEATTN_SM90_VARIANTS``), its length and the positions of its waits, shuffles and exp2s:

    python benchmarks/dev/sm90_sass.py [-D SAGEATTN_SM90_VARIANTS] [source ...]

Positions count SASS instructions from the loop's first (the consumer's ``BAR.SYNC`` of its turn)
to its backward branch; the masked-block path (a branch over ~200 instructions) is included.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.dev.qattn_sass import compile_source
from scripts import cuda_env

DEFAULT_SOURCES = ["qk_int8_sv_f8_accum_f32f32_hd128_sm90.cu", "qk_int8_sv_f8_accum_f32f32_hd64_sm90.cu"]
LINE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
EVENTS = {"BAR.SYNC": "turn", "BAR.ARV": "arrive", "DEPBAR.LE gsb0, 0x1": "wait S", "DEPBAR.LE gsb0, 0x0": "wait R",
          "SHFL": "shfl", "SYNCS.ARRIVE": "release"}


def kernels(sass: str) -> dict[str, list[tuple[int, str]]]:
    """Kernel name -> [(address, instruction)] of each ``QkInt8AttnSm90Kernel`` in cuobjdump output."""
    out: dict[str, list[tuple[int, str]]] = {}
    name = None
    for line in sass.splitlines():
        if "Function : " in line:
            name = line.split("Function : ")[1].strip()
            out[name] = []
        elif name and (m := LINE.match(line)):
            out[name].append((int(m.group(1), 16), m.group(2)))
    return {k: v for k, v in out.items() if "QkInt8AttnSm90Kernel" in k}


def kv_loop(code: list[tuple[int, str]]) -> list[str]:
    """The instructions of the KV loop: from the branch target of the last backward branch that
    jumps to a ``BAR.SYNC`` (the consumer's turn) up to that branch."""
    address = {a: i for i, (a, _) in enumerate(code)}
    for i in range(len(code) - 1, -1, -1):
        m = re.search(r"\bBRA (?:`\(\S+\) )?0x([0-9a-f]+)$", code[i][1])
        if m and int(m.group(1), 16) < code[i][0]:
            start = address.get(int(m.group(1), 16))
            if start is not None and "BAR.SYNC" in code[start][1]:
                return [ins for _, ins in code[start:i + 1]]
    raise ValueError("no KV loop (a backward branch to a BAR.SYNC) found")


def describe(loop: list[str]) -> str:
    events = [f"{i}:{label}" for i, ins in enumerate(loop) for key, label in EVENTS.items() if key in ins]
    mufu = [i for i, ins in enumerate(loop) if "MUFU.EX2" in ins]
    span = f"exp2 {mufu[0]}..{mufu[-1]} ({len(mufu)})" if mufu else "exp2 none"
    return f"{len(loop)} instructions, {span}; " + " ".join(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", default=DEFAULT_SOURCES)
    parser.add_argument("-D", dest="defines", action="append", default=[], help="a macro for nvcc, NAME[=VALUE]")
    args = parser.parse_args()
    nvcc, where = cuda_env.find_nvcc()
    if nvcc is None:
        sys.exit(f"nvcc not found ({where})")
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.sources:
            compile_source(nvcc, source, "90a", "90a", args.defines, Path(tmp) / "k.o")
            try:
                sass = cuda_env.cuobjdump_sass(Path(tmp) / "k.o")
            except cuda_env.SassToolsMissing as exc:
                sys.exit(str(exc))
            for name, code in sorted(kernels(sass).items()):
                m = re.search(r"KernelILi(\d+)ELi(\d+)E", name)
                label = f"hd{m.group(1)} variant {m.group(2)}" if m else name
                print(f"{source} {label}: {describe(kv_loop(code))}")


if __name__ == "__main__":
    main()
