"""``exp2_poly`` (csrc/qattn/qk_int8_attn_common.cuh): 2^x on the FMA pipe for the sm90 kernel's
schedule variant 8, compiled from the same header for the host and run on the CPU.

Against ``exp2`` in double precision: one period of the polynomial densely (every 2^-22 of
f in [-0.5, 0.5], where all of its error lies), each integer part from -125 to 9 (the exponent
arithmetic: P = 2^(S - m + log2 448) lies in [2^-125, 448]), and the clamp below -125 (masked keys,
-inf). Marker ``build``: skips without nvcc unless ``SAGEATTN_REQUIRE_BUILD_TEST=1`` (CI sets it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from scripts import cuda_env

from _wheel_build import skip_or_fail

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.build

#: The degree-4 fit's worst relative error in float32 arithmetic is 2.72e-6 (at f = -0.414);
#: a wrong coefficient or a lost bit in the exponent step is orders of magnitude above this.
EXP2_POLY_MAX_REL_ERROR = 3e-6

PROGRAM = r"""
#include <cmath>
#include <cstdio>
#include "qk_int8_attn_common.cuh"
using sageattention::qattn::exp2_poly;

static double rel_error(float x) {
  const double want = std::exp2(static_cast<double>(x));
  return std::fabs(static_cast<double>(exp2_poly(x)) - want) / want;
}

int main() {
  double period = 0.0, integers = 0.0;
  for (int i = 0; i <= (1 << 22); ++i) period = std::fmax(period, rel_error(-0.5f + i * 0x1p-22f));
  for (int n = -124; n <= 9; ++n)
    for (int i = 0; i < 4096; ++i) integers = std::fmax(integers, rel_error(n - 0.5f + i / 4096.0f));
  std::printf("period %.6e\nintegers %.6e\n", period, integers);
  std::printf("at_-125 %.9e\nclamped %.9e %.9e %.9e\n", exp2_poly(-125.0f), exp2_poly(-125.5f), exp2_poly(-1000.0f),
              exp2_poly(-INFINITY));
  std::printf("at_log2_448 %.9e\n", exp2_poly(std::log2(448.0f)));
  return 0;
}
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, list[float]]:
    nvcc, where = cuda_env.find_nvcc()
    if nvcc is None:
        skip_or_fail(f"nvcc not found ({where})")
    work = tmp_path_factory.mktemp("exp2_poly")
    (work / "exp2_poly.cu").write_text(PROGRAM)
    exe = work / "exp2_poly"
    cmd = [str(nvcc), "-O2", "-std=c++17", f"-I{REPO / 'csrc' / 'qattn'}", str(work / "exp2_poly.cu"), "-o", str(exe)]
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, f"nvcc failed:\n{done.stdout[-4000:]}"
    out = subprocess.run([str(exe)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out.splitlines() if re.match(r"\w", line)}


def test_polynomial_error_over_one_period(report):
    assert report["period"][0] <= EXP2_POLY_MAX_REL_ERROR


def test_exponent_step_keeps_the_error_for_every_integer_part(report):
    # Same bound for x in [-124.5, 9.5): the integer part only moves exponent bits, exactly.
    assert report["integers"][0] <= EXP2_POLY_MAX_REL_ERROR


def test_lowest_unclamped_value_is_a_normal_float(report):
    (value,) = report["at_-125"]
    assert abs(value / 2.0**-125 - 1.0) <= EXP2_POLY_MAX_REL_ERROR


def test_masked_keys_clamp_to_two_to_the_minus_125(report):
    # -125.5, -1000 and -inf all become 2^-125 (0 once P is e4m3), never a negative or NaN bit pattern.
    want = report["at_-125"][0]
    assert report["clamped"] == [want, want, want]


def test_largest_p_stays_below_the_e4m3_maximum_by_its_error(report):
    # P·448 at the row maximum: 448 within the polynomial's error (satfinite keeps e4m3 at 448).
    (value,) = report["at_log2_448"]
    assert abs(value / 448.0 - 1.0) <= EXP2_POLY_MAX_REL_ERROR
