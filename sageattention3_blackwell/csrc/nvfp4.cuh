// NVFP4 numerics shared by the quantizer and the attention kernel (Torch-free).
//
// NVFP4 = FP4 E2M1 values (grid 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6) in blocks of 16 consecutive
// elements along the reduction dimension, one unsigned E4M3 scale per block. The quantizer is the
// one of sageattn3/nvfp4.py, step for step, so codes and scales are bit-identical to it:
//   scale = round_e4m3(max|x| / 6)      (saturating at 448; the *rounded* scale is what the MMA reads)
//   recip = scale > 0 ? 1 / scale : 0   (reciprocal of the rounded scale)
//   code  = round_e2m1(x * recip)       (nearest, ties to even, saturating at ±6)
// Every float step is an explicit IEEE round-to-nearest operation (__fdiv_rn, __fmul_rn), so the
// result does not depend on -use_fast_math or FMA contraction.
//
// Packing (PTX "e2m1" operands of mma .m16n8k64, elements low to high): element i of a packed
// 32-bit word sits in bits [4i, 4i+4); in memory, byte j holds elements 2j (low nibble) and 2j+1
// (high nibble). A code is sign << 3 | magnitude index (0, 0.5, 1, 1.5, 2, 3, 4, 6 -> 0..7).

#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace sageattn3 {
namespace nvfp4 {

constexpr float kE2M1Max = 6.0f;
constexpr int kBlock = 16;

// E2M1 code (4 bits) of float x, nearest with ties to even, saturating at ±6.
__device__ __forceinline__ uint32_t e2m1_code(float x) {
  const float a = fminf(fabsf(x), kE2M1Max);
  float mag;
  if (a < 2.0f) {
    mag = __fmul_rn(rintf(__fmul_rn(a, 2.0f)), 0.5f);  // step 0.5 on [0, 2)
  } else if (a < 4.0f) {
    mag = rintf(a);                                    // step 1 on [2, 4)
  } else {
    mag = __fmul_rn(rintf(__fmul_rn(a, 0.5f)), 2.0f);  // step 2 on [4, 6]
  }
  mag = fminf(mag, kE2M1Max);
  uint32_t index;
  if (mag < 2.0f) {
    index = static_cast<uint32_t>(__fmul_rn(mag, 2.0f));  // 0, 0.5, 1, 1.5 -> 0..3
  } else if (mag < 4.0f) {
    index = static_cast<uint32_t>(mag) + 2u;               // 2, 3 -> 4, 5
  } else {
    index = mag < 6.0f ? 6u : 7u;                          // 4, 6 -> 6, 7
  }
  return (x < 0.0f && index != 0u ? 8u : 0u) | index;
}

// float -> E4M3 bits (round to nearest even, saturating at ±448), and back.
__device__ __forceinline__ uint32_t e4m3_bits(float x) {
  return static_cast<uint32_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ __half e4m3_to_half(uint32_t bits) {
  return __half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(bits & 0xffu), __NV_E4M3));
}

__device__ __forceinline__ float e4m3_to_float(uint32_t bits) { return __half2float(e4m3_to_half(bits)); }

// Scale bits and reciprocal of one block whose absolute maximum is `amax`.
__device__ __forceinline__ uint32_t block_scale(float amax, float* recip) {
  const uint32_t bits = e4m3_bits(__fdiv_rn(amax, kE2M1Max));
  const float scale = e4m3_to_float(bits);
  *recip = scale > 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
  return bits;
}

// Pack the codes of 8 values (already multiplied by nothing) quantized with `recip`.
__device__ __forceinline__ uint32_t pack8(const float (&v)[8], float recip) {
  uint32_t word = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    word |= e2m1_code(__fmul_rn(v[i], recip)) << (4 * i);
  }
  return word;
}

}  // namespace nvfp4
}  // namespace sageattn3
