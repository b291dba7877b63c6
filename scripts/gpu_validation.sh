#!/usr/bin/env bash
# Build this machine's cell, install its wheel, run the whole test suite on the GPU and
# (with --bench) the benchmark. Used on the lent H100 (py312-torch211-cu130); works on any
# GPU machine whose python/torch/nvcc match a matrix cell. Logs go to $OUT (default ./gpu-out).
#
#   bash scripts/gpu_validation.sh [--cell CELL] [--archs "9.0a"] [--sage3] [--sage3-blackwell] [--tests "PATHS"] [--shard I/N] [--bench | --bench-args "ARGS"] [--skip-build | --wheel WHEEL] [--dist-dir DIR]
#
# --sage3 also builds sageattn3 for this GPU with the software FP4 MMA
# (SAGEATTN3_EMULATED_MMA_BUILD=1, arch 9.0a) and installs it, so tests/test_sageattn3_kernel.py
# executes the kernel's logic here (no Blackwell GPU: the hardware FP4 MMA never runs).
# --sage3-blackwell builds (compile only, never runs here) the sageattn3 wheel for the cell's
# Blackwell archs through the same build/retag/verify pipeline; log: $OUT/build_sageattn3_blackwell.log.
# --wheel installs a sageattention wheel built earlier (e.g. one carried to the device) instead of
# building; --skip-build uses whatever compiled extension the tree already has.
# Builds go to a fresh directory per run (--dist-dir DIR, default a new /tmp/gpu-validation-dist.*),
# never to dist/: a machine kept warm between calls still holds the last run's wheel there, and
# scripts.build refuses to overwrite a wheel of the same name (session 5 lost a call to that).
# --tests limits pytest to the given paths/node ids (default: the whole suite, more than one 10-minute
# call on the H100).
# --shard I/N (1 <= I <= N) runs the I-th of N parts of the --tests files, split by file: the files are
# collected (pytest --collect-only -qq, same -m/--ignore/PYTEST_ARGS), weighted by their number of
# tests times a rough cost per test (SHARD_COST below: Triton attention tests compile a kernel per new
# autotune key), and dealt out largest first to the lightest part, ties by name. The split depends
# only on the collected counts, so run all N parts from the same tree and the same flags (e.g. one
# build call with --shard 1/3, then --skip-build --shard 2/3 and 3/3 on the same machine); each call
# writes the whole plan to $OUT/shards.txt. Node ids in --tests cannot be sharded (refused).
# Every pytest run writes $OUT/pytest.log (with the 25 slowest durations), $OUT/junit.xml (per-test
# outcome and time; suite name says the shard) and $OUT/file_times.txt (seconds and tests per file,
# from the junit: what SHARD_COST should be re-derived from). The Triton attention kernels are pinned to
# one config by tests/conftest.py (SAGEATTN_TRITON_CONFIG, see sageattention/triton/_configs.py;
# SAGEATTN_TRITON_CONFIG=autotune restores autotuning); the pytest step prints the config in use.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
cell="" archs="" bench=0 build=1 sage3=0 sage3_blackwell=0 tests="tests" bench_args="" prebuilt="" shard="" dist_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cell) cell="$2"; shift 2 ;;
    --archs) archs="$2"; shift 2 ;;
    --bench) bench=1; shift ;;
    --sage3) sage3=1; shift ;;
    --sage3-blackwell) sage3_blackwell=1; shift ;;
    --bench-args) bench=1; bench_args="$2"; shift 2 ;;
    --tests) tests="$2"; shift 2 ;;
    --shard) shard="$2"; shift 2 ;;
    --skip-build) build=0; shift ;;
    --wheel) build=0; prebuilt="$2"; shift 2 ;;
    --dist-dir) dist_dir="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
shard_i="" shard_n=""
if [ -n "$shard" ]; then
  if [[ ! "$shard" =~ ^([0-9]+)/([0-9]+)$ ]] || (( BASH_REMATCH[1] < 1 || BASH_REMATCH[1] > BASH_REMATCH[2] )); then
    echo "--shard takes I/N with 1 <= I <= N, got '$shard'" >&2; exit 2
  fi
  shard_i=${BASH_REMATCH[1]} shard_n=${BASH_REMATCH[2]}
  if [[ "$tests" == *::* ]]; then
    echo "--shard splits files: give --tests files or directories, not node ids ('$tests')" >&2; exit 2
  fi
fi
[ -n "$dist_dir" ] || dist_dir=$(mktemp -d /tmp/gpu-validation-dist.XXXXXX)
mkdir -p "$dist_dir"
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
  args+=(--dist-dir "$dist_dir")
  start=$(date +%s)
  $PY -m scripts.build "${args[@]}" 2>&1 | tee "$OUT/build.log"
  rc=${PIPESTATUS[0]}
  echo "build exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
  [ "$rc" = 0 ] || exit "$rc"
  prebuilt=$(ls -t "$dist_dir"/*/sageattention-*.whl | head -n 1)
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
  sargs=(--package sageattn3 --archs 9.0a --dist-dir "$dist_dir")
  [ -n "$cell" ] && sargs+=(--cell "$cell")
  SAGEATTN3_EMULATED_MMA_BUILD=1 $PY -m scripts.build "${sargs[@]}" 2>&1 | tee "$OUT/build_sageattn3.log"
  [ "${PIPESTATUS[0]}" = 0 ] || exit 1
  wheel3=$(ls -t "$dist_dir"/*/sageattn3-*.whl | head -n 1)
  $PY -m pip install --no-deps --force-reinstall "$wheel3" 2>&1 | tail -n 1 | tee -a "$OUT/build_sageattn3.log"
  # A test-only build (software FP4 MMA for sm_90): never leave it to be published, and keep the
  # name free for --sage3-blackwell's real wheel (the dist directory refuses to overwrite).
  rm -f "$wheel3" && echo "removed test-only $wheel3" | tee -a "$OUT/build_sageattn3.log"
  export SAGEATTN3_REQUIRE_KERNEL_TEST=1
fi

if [ "$build" = 1 ] && [ "$sage3_blackwell" = 1 ]; then
  bargs=(--package sageattn3 --dist-dir "$dist_dir")
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

# Which Triton attention configs this run tests (tests/conftest.py's pin, or the user's value).
$PY - <<'PYEOF' 2>&1 | tail -n 1
import importlib.util
spec = importlib.util.spec_from_file_location("conftest", "tests/conftest.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
from sageattention.triton._configs import describe_configs
print("gpu_validation:", describe_configs())
PYEOF

suite="sageattention"
if [ -n "$shard" ]; then
  suite="sageattention-shard-$shard_i-of-$shard_n"
  # shellcheck disable=SC2086  # --tests is a space-separated list of paths
  $PY -m pytest --collect-only -qq $tests -m "not build" "${ignore[@]}" ${PYTEST_ARGS:-} >"$OUT/collect.txt" 2>&1
  rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 2 ]; then  # 2: collection errors; those files still get a shard
    echo "gpu_validation: collecting the tests failed (exit $rc):" >&2; tail -n 20 "$OUT/collect.txt" >&2; exit 1
  fi
  tests=$($PY - "$shard_i" "$shard_n" "$OUT/collect.txt" "$OUT/shards.txt" <<'PYEOF'
import fnmatch, re, sys

index, count, collected, plan_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
# SHARD_COST: rough relative cost of one test on the H100, first matching pattern wins, else 1. Why:
# the CUDA kernel and quantizer tests take ~0.1-0.3 s each, while each new autotune key of a Triton
# attention kernel compiles it (seconds; 7 configs per key before the pin), e.g. 52 tests of
# test_api_accuracy.py filled 250 s unpinned (benchmarks/results/h100-2026-11-23-session3/NOTES.md).
SHARD_COST = [
    ("test_api_accuracy.py", 10), ("test_attn_*_triton.py", 10), ("test_triton_configs.py", 10),
    ("test_*triton*.py", 3),
]
files = {}
for line in open(collected, encoding="utf-8"):
    m = re.match(r"^(\S+\.py): (\d+)$", line.strip()) or re.match(r"^ERROR (\S+\.py)\b", line.strip())
    if m:
        tests = int(m.group(2)) if m.lastindex == 2 else 1
        name = m.group(1).rsplit("/", 1)[-1]
        cost = next((c for pattern, c in SHARD_COST if fnmatch.fnmatch(name, pattern)), 1)
        files[m.group(1)] = max(files.get(m.group(1), 0), tests * cost)
shards = [[0, []] for _ in range(count)]
for path, weight in sorted(files.items(), key=lambda kv: (-kv[1], kv[0])):
    lightest = min(range(count), key=lambda i: (shards[i][0], i))
    shards[lightest][0] += weight
    shards[lightest][1].append(path)
with open(plan_path, "w", encoding="utf-8") as plan:
    for i, (weight, paths) in enumerate(shards, 1):
        line = f"shard {i}/{count}: weight {weight}, {len(paths)} files: {' '.join(sorted(paths))}"
        print(line, file=plan)
        print(("-> " if i == index else "   ") + line, file=sys.stderr)
print(" ".join(sorted(shards[index - 1][1])))
PYEOF
  )
  if [ -z "$tests" ]; then
    echo "gpu_validation: shard $shard has no test files (more shards than files?)"; exit "$status"
  fi
fi
# shellcheck disable=SC2086  # --tests is a space-separated list of paths
$PY -m pytest $tests -m "not build" -q -rs --durations=25 --junitxml "$OUT/junit.xml" -o junit_suite_name="$suite" \
  "${ignore[@]}" ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# Seconds and tests per file, slowest first: the measurement to re-derive SHARD_COST from.
$PY - "$OUT/junit.xml" >"$OUT/file_times.txt" <<'PYEOF' || true
import collections, sys, xml.etree.ElementTree as ET

seconds, tests = collections.Counter(), collections.Counter()
for case in ET.parse(sys.argv[1]).iter("testcase"):
    parts = case.get("classname", "").split(".")  # tests.test_x[.TestClass]
    name = "tests/" + next((p for p in parts if p.startswith("test_")), parts[-1]) + ".py"
    seconds[name] += float(case.get("time", 0))
    tests[name] += 1
for name, secs in seconds.most_common():
    print(f"{secs:8.1f} s {tests[name]:5d} tests  {name}")
PYEOF

if [ "$bench" = 1 ]; then
  # shellcheck disable=SC2086  # --bench-args is a space-separated argument list
  $PY benchmarks/bench_attention.py $bench_args 2>&1 | tee "$OUT/bench.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  cp benchmarks/results/*.csv benchmarks/results/*.png "$OUT/" 2>/dev/null || true
fi
exit $status
