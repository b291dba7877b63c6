#!/usr/bin/env bash
# One device call for the sm90 kernel's schedule variants (csrc/qattn/qk_int8_attn_sm90.cuh):
# an experiment build for 9.0a holding all of them (-DSAGEATTN_SM90_VARIANTS; keep it out of dist/),
# the sm90 test file (variant 0 plus the variant tests), kernel-only timing of every variant at
# hd128 4K/16K and hd64 16K (benchmarks/dev/sm90_variants.py, output compared bit for bit with
# variant 0), hd128 16K causal for 0/16/17, and Nsight Compute (warp states and per-instruction
# stall samples, SASS source page) of variants 0 and 16 at hd128 4K.
#
#   bash benchmarks/dev/sm90_variants.sh          # on the lent H100, from the repository root
#
# At most 8 files come back from $OUT: gpu_validation.sh keeps its own logs in /tmp/gv, the ncu
# reports stay in /tmp; here: validation.log, variants.txt, ncu.log, two CSVs per profile and
# variant 0's .ncu-rep.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
NVCC_APPEND_FLAGS=-DSAGEATTN_SM90_VARIANTS OUT=/tmp/gv bash scripts/gpu_validation.sh --cell py312-torch211-cu130 \
  --archs 9.0a --tests tests/test_qk_int8_sv_f8_attn_sm90.py >"$OUT/validation.log" 2>&1
echo "validation exit $?"
grep -E "build exit|passed|failed" "$OUT/validation.log" | tail -n 3
python3 benchmarks/dev/sm90_variants.py --variant 0 --save-ref 2>&1 | tee -a "$OUT/variants.txt"
for v in 16 1 2 3 17 4 5 8 9 25 0; do
  python3 benchmarks/dev/sm90_variants.py --variant "$v" 2>&1 | tee -a "$OUT/variants.txt"
done
python3 benchmarks/dev/sm90_variants.py --variant 0 --causal --shapes 128:16384 --save-ref 2>&1 | tee -a "$OUT/variants.txt"
for v in 16 17 0; do
  python3 benchmarks/dev/sm90_variants.py --variant "$v" --causal --shapes 128:16384 2>&1 | tee -a "$OUT/variants.txt"
done
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for v in 0 16; do
  timeout 150 "$NCU" --kernel-name regex:QkInt8AttnSm90Kernel --launch-skip 1 --launch-count 1 \
    --section SourceCounters --section WarpStateStats --section SchedulerStats --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section LaunchStats --section Occupancy -f -o "/tmp/ncu_v$v" \
    python3 benchmarks/dev/sm90_variants.py --variant "$v" --profile --shapes 128:4096 >>"$OUT/ncu.log" 2>&1
  echo "ncu variant $v exit $?"
  "$NCU" -i "/tmp/ncu_v$v.ncu-rep" --page details --csv >"$OUT/ncu_v${v}_details.csv" 2>&1
  "$NCU" -i "/tmp/ncu_v$v.ncu-rep" --page source --csv --print-source sass >"$OUT/ncu_v${v}_source.csv" 2>&1
done
# The eighth file: variant 0's report itself, in case the source page export above fails.
cp /tmp/ncu_v0.ncu-rep "$OUT/" 2>/dev/null || true
