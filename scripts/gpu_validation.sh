#!/usr/bin/env bash
# Build this machine's cell, install its wheel, run the whole test suite on the GPU and
# (with --bench) the benchmark. Used on the lent H100 (py312-torch211-cu130); works on any
# GPU machine whose python/torch/nvcc match a matrix cell. Logs go to $OUT (default ./gpu-out).
#
#   bash scripts/gpu_validation.sh [--cell CELL] [--archs "9.0a"] [--bench] [--skip-build]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
cell="" archs="" bench=0 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --cell) cell="$2"; shift 2 ;;
    --archs) archs="$2"; shift 2 ;;
    --bench) bench=1; shift ;;
    --skip-build) build=0; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
export PYTHONUNBUFFERED=1
# The lent H100's image sets TORCH_CUDA_ARCH_LIST=9.0a and a g++ wrapper that links libstdc++
# statically (a TORCH_CHECK message then crashed inside _C.so; preflight refuses such a g++).
# Use the system compilers and the cell's default arch list unless --archs says otherwise.
if [ -x /usr/bin/g++ ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
unset TORCH_CUDA_ARCH_LIST
# `wheel tags --build` needs wheel >= 0.48: carry .whl/ (see README of the device tool) if absent.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
PY=${PYTHON:-python3}
status=0

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -n 1
  nproc
} 2>&1 | tee "$OUT/machine.txt"

if [ "$build" = 1 ]; then
  args=()
  [ -n "$cell" ] && args+=(--cell "$cell")
  [ -n "$archs" ] && args+=(--archs "$archs")
  start=$(date +%s)
  $PY -m scripts.build "${args[@]}" 2>&1 | tee "$OUT/build.log"
  rc=${PIPESTATUS[0]}
  echo "build exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
  [ "$rc" = 0 ] || exit "$rc"
  wheel=$(ls -t dist/*/sageattention-*.whl | head -n 1)
  echo "installing $wheel" | tee -a "$OUT/build.log"
  $PY -m pip install --no-deps --force-reinstall "$wheel" 2>&1 | tail -n 1 | tee -a "$OUT/build.log"
  # Tests import the source tree; give it the compiled extension of the wheel just built.
  $PY - "$wheel" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    for name in zf.namelist():
        if name.startswith("sageattention/") and name.endswith(".so"):
            zf.extract(name, ".")
            print("extracted", name)
PYEOF
fi

$PY -m pytest tests -m "not build" -q -rs 2>&1 | tee "$OUT/pytest.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

if [ "$bench" = 1 ]; then
  $PY benchmarks/bench_attention.py 2>&1 | tee "$OUT/bench.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  cp benchmarks/results/*.csv "$OUT/" 2>/dev/null || true
fi
exit $status
