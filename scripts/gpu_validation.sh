#!/usr/bin/env bash
# Build this machine's cell, install its wheel, run the whole test suite on the GPU and
# (with --bench) the benchmark. Used on the lent H100 (py312-torch211-cu130); works on any
# GPU machine whose python/torch/nvcc match a matrix cell. Logs go to $OUT (default ./gpu-out).
#
#   bash scripts/gpu_validation.sh [--cell CELL] [--archs "9.0a"] [--sage3] [--sage3-blackwell] [--tests "PATHS"] [--bench | --bench-args "ARGS"] [--skip-build | --wheel WHEEL]
#
# --sage3 also builds sageattn3 for this GPU with the software FP4 MMA
# (SAGEATTN3_EMULATED_MMA_BUILD=1, arch 9.0a) and installs it, so tests/test_sageattn3_kernel.py
# executes the kernel's logic here (no Blackwell GPU: the hardware FP4 MMA never runs).
# --sage3-blackwell builds (compile only, never runs here) the sageattn3 wheel for the cell's
# Blackwell archs through the same build/retag/verify pipeline; log: $OUT/build_sageattn3_blackwell.log.
# --wheel installs a sageattention wheel built earlier (e.g. one carried to the device) instead of
# building; --skip-build uses whatever compiled extension the tree already has.
# --tests limits pytest to the given paths/node ids (default: the whole suite, ~10 min on the H100).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
cell="" archs="" bench=0 build=1 sage3=0 sage3_blackwell=0 tests="tests" bench_args="" prebuilt=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cell) cell="$2"; shift 2 ;;
    --archs) archs="$2"; shift 2 ;;
    --bench) bench=1; shift ;;
    --sage3) sage3=1; shift ;;
    --sage3-blackwell) sage3_blackwell=1; shift ;;
    --bench-args) bench=1; bench_args="$2"; shift 2 ;;
    --tests) tests="$2"; shift 2 ;;
    --skip-build) build=0; shift ;;
    --wheel) build=0; prebuilt="$2"; shift 2 ;;
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
  args=(--package sageattention)
  [ -n "$cell" ] && args+=(--cell "$cell")
  [ -n "$archs" ] && args+=(--archs "$archs")
  start=$(date +%s)
  $PY -m scripts.build "${args[@]}" 2>&1 | tee "$OUT/build.log"
  rc=${PIPESTATUS[0]}
  echo "build exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
  [ "$rc" = 0 ] || exit "$rc"
  prebuilt=$(ls -t dist/*/sageattention-*.whl | head -n 1)
fi
if [ -n "$prebuilt" ]; then
  echo "installing $prebuilt" | tee -a "$OUT/build.log"
  $PY -m pip install --no-deps --force-reinstall "$prebuilt" 2>&1 | tail -n 1 | tee -a "$OUT/build.log"
  # Tests import the source tree; give it the compiled extension of the wheel.
  $PY - "$prebuilt" <<'PYEOF' | tee -a "$OUT/build.log"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    for name in zf.namelist():
        if name.startswith("sageattention/") and name.endswith(".so"):
            zf.extract(name, ".")
            print("extracted", name)
PYEOF
fi

if [ "$build" = 1 ] && [ "$sage3" = 1 ]; then
  sargs=(--package sageattn3 --archs 9.0a)
  [ -n "$cell" ] && sargs+=(--cell "$cell")
  SAGEATTN3_EMULATED_MMA_BUILD=1 $PY -m scripts.build "${sargs[@]}" 2>&1 | tee "$OUT/build_sageattn3.log"
  [ "${PIPESTATUS[0]}" = 0 ] || exit 1
  wheel3=$(ls -t dist/*/sageattn3-*.whl | head -n 1)
  $PY -m pip install --no-deps --force-reinstall "$wheel3" 2>&1 | tail -n 1 | tee -a "$OUT/build_sageattn3.log"
  # A test-only build (software FP4 MMA for sm_90): never leave it in dist/ to be published, and
  # keep the name free for --sage3-blackwell's real wheel (dist/ refuses to overwrite).
  rm -f "$wheel3" && echo "removed test-only $wheel3 from dist/" | tee -a "$OUT/build_sageattn3.log"
  export SAGEATTN3_REQUIRE_KERNEL_TEST=1
fi

if [ "$build" = 1 ] && [ "$sage3_blackwell" = 1 ]; then
  bargs=(--package sageattn3)
  [ -n "$cell" ] && bargs+=(--cell "$cell")
  start=$(date +%s)
  $PY -m scripts.build "${bargs[@]}" 2>&1 | tee "$OUT/build_sageattn3_blackwell.log"
  rc=${PIPESTATUS[0]}
  echo "sageattn3 Blackwell build exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/build_sageattn3_blackwell.log"
  [ "$rc" = 0 ] || status=1
fi

# The conda packaging tests need py-rattler(-build), which the GPU image lacks and cannot download;
# CI runs them. Leave them out here, saying so, rather than fail collection.
ignore=()
for mod in rattler rattler_build; do
  if ! $PY -c "import $mod" 2>/dev/null; then
    echo "gpu_validation: $mod not installed: skipping tests/test_recipes.py and tests/test_conda_channel.py (CI runs them)"
    ignore=(--ignore=tests/test_recipes.py --ignore=tests/test_conda_channel.py)
  fi
done
# shellcheck disable=SC2086  # --tests is a space-separated list of paths
$PY -m pytest $tests -m "not build" -q -rs --durations=25 "${ignore[@]}" ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

if [ "$bench" = 1 ]; then
  # shellcheck disable=SC2086  # --bench-args is a space-separated argument list
  $PY benchmarks/bench_attention.py $bench_args 2>&1 | tee "$OUT/bench.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  cp benchmarks/results/*.csv benchmarks/results/*.png "$OUT/" 2>/dev/null || true
fi
exit $status
