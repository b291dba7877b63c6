"""Compile mma.sync attention instantiations without a GPU and count what their SASS does.

Why: the mma.sync kernels (issue 5) run on the lent H100 only through the driver's JIT of their
compute_80 / compute_89 PTX, and session 3's profile found them latency-bound (two warps per
scheduler, tensor pipe 27 % busy). A change of the KV loop's structure shows in the SASS before
any GPU is at hand: registers, spills, CTA barriers, MMAs and loads per kernel. ``code=sm_90``
from ``compute_80`` is what that JIT compiles (with the driver's ptxas instead of this nvcc's).

    python benchmarks/dev/qattn_sass.py [--arch 80:90] [-D SAGEATTN_QATTN_WARP_ROWS=16] [source ...]

Sources are file names under csrc/qattn/instantiations/ (default: the four hd128/hd64 fp32
instantiations of the sm80 and sm89 families). Counts are per kernel, not per KV block.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts import cuda_env

INSTANTIATIONS = ROOT / "csrc" / "qattn" / "instantiations"
DEFAULT_SOURCES = [
    "qk_int8_sv_f16_accum_f32_hd128_sm80.cu",
    "qk_int8_sv_f16_accum_f32_hd64_sm80.cu",
    "qk_int8_sv_f8_accum_f32f32_hd128_sm89.cu",
    "qk_int8_sv_f8_accum_f32f32_hd64_sm89.cu",
]
# Opcode families worth a column: tensor-core MMAs, shared-memory matrix loads, async copies,
# barriers, exp2, FP32 arithmetic, moves and shuffles.
FAMILIES = {
    "MMA": re.compile(r"^(HMMA|IMMA|QMMA)"),
    "LDSM": re.compile(r"^LDSM"),
    "LDGSTS": re.compile(r"^LDGSTS"),
    "BAR": re.compile(r"^BAR\.SYNC"),
    "EX2": re.compile(r"^MUFU\.EX2"),
    "FP32": re.compile(r"^(FFMA|FMUL|FADD|FMNMX)"),
    "MOV": re.compile(r"^MOV"),
    "SHFL": re.compile(r"^SHFL"),
}
INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


def compile_source(nvcc: Path, source: str, ptx_arch: str, sm_arch: str, defines: list[str], obj: Path) -> str:
    cmd = [str(nvcc), "-c", str(INSTANTIATIONS / source), "-o", str(obj), "-O3", "-std=c++17",
           f"-gencode=arch=compute_{ptx_arch},code=sm_{sm_arch}", "-Xptxas", "-v"]
    cmd += [f"-D{d}" for d in defines]
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"nvcc failed for {source}:\n{done.stdout[-4000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", default=DEFAULT_SOURCES)
    parser.add_argument("--arch", default="80:90",
                        help="PTX:SASS arch, e.g. 80:90 (the H100's JIT of the sm80 source), 89:89")
    parser.add_argument("-D", dest="defines", action="append", default=[], help="a macro for nvcc, NAME=VALUE")
    args = parser.parse_args()
    nvcc, where = cuda_env.find_nvcc()
    if nvcc is None:
        sys.exit(f"nvcc not found ({where})")
    ptx_arch, sm_arch = args.arch.split(":")
    print(f"compute_{ptx_arch} -> sm_{sm_arch}, defines {args.defines or 'none'}")
    print(f"{'source':44} {'regs':>4} {'spill':>5} {'instrs':>6} " + " ".join(f"{f:>6}" for f in FAMILIES))
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.sources:
            # sm89-family sources hold FP8 MMAs: their PTX needs compute_89 at least.
            ptx = ptx_arch if "sm80" in source or int(ptx_arch) >= 89 else "89"
            if int(ptx) > int(sm_arch.rstrip("a")):
                print(f"{source:44} (not built for sm_{sm_arch}: needs compute_{ptx})")
                continue
            log = compile_source(nvcc, source, ptx, sm_arch, args.defines, Path(tmp) / "k.o")
            regs = max(int(r) for r in re.findall(r"Used (\d+) registers", log))
            spill = sum(int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log))
            try:
                sass = cuda_env.cuobjdump_sass(Path(tmp) / "k.o")
            except cuda_env.SassToolsMissing as exc:
                sys.exit(str(exc))
            ops = [m.group(1) for m in INSTRUCTION.finditer(sass)]
            counts = Counter(name for op in ops for name, rx in FAMILIES.items() if rx.match(op))
            print(f"{source:44} {regs:>4} {spill:>5} {len(ops):>6} " + " ".join(f"{counts[f]:>6}" for f in FAMILIES))


if __name__ == "__main__":
    main()
