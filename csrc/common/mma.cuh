// Torch-free PTX wrappers for the attention kernels: warp-level MMA, ldmatrix, cp.async, exp2.
//
// Fragment layouts are the PTX ISA's ("Matrix fragments for mma.m16n8k16 / mma.m16n8k32"), with
// lane = 4 * group + tig (group = lane / 4 in 0..7, tig = lane % 4):
//   A 16xK row-major, 4 x b32 per lane:  a0 (row group,   cols Ka), a1 (row group+8, cols Ka),
//                                        a2 (row group,   cols Kb), a3 (row group+8, cols Kb)
//     k16 f16:    Ka = 2 tig + {0,1},  Kb = Ka + 8        (2 halves per register)
//     k32 8-bit:  Ka = 4 tig + {0..3}, Kb = Ka + 16       (4 bytes per register)
//   B Kx8 "col" (each of the 8 columns contiguous along K), 2 x b32 per lane, column = group:
//     k16 f16:    b0 rows 2 tig + {0,1},  b1 rows 2 tig + {8,9}
//     k32 8-bit:  b0 rows 4 tig + {0..3}, b1 rows 4 tig + {16..19}
//   C/D 16x8: c0, c1 (row group, cols 2 tig, 2 tig + 1); c2, c3 (row group + 8, same cols);
//     an f16 accumulator packs (c0, c1) into one half2 register and (c2, c3) into another.
// The lowest column/K index always sits in the lowest bits of a register.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace sageattention {
namespace ptx {

// D = A * B + D, INT8 x INT8 -> INT32 (sm_80+).
__device__ __forceinline__ void mma_s8_m16n8k32(int32_t (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A * B + D, f16 x f16 -> f32 (sm_80+).
__device__ __forceinline__ void mma_f16_f32_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                     uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A * B + D, f16 x f16 -> f16 (sm_80+); d[0] = rows group, d[1] = rows group + 8.
__device__ __forceinline__ void mma_f16_f16_m16n8k16(uint32_t (&d)[2], const uint32_t (&a)[4], uint32_t b0,
                                                     uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, "
      "{%0, %1};\n"
      : "+r"(d[0]), "+r"(d[1])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 890
// D = A * B + D, e4m3 x e4m3 -> f32 (sm_89+). On sm89/sm90 the sum keeps ~13 mantissa bits
// (research notes §2.3.5): callers that need FP32 accumulate per block from zero.
__device__ __forceinline__ void mma_e4m3_f32_m16n8k32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                      uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A * B + D, e4m3 x e4m3 -> f16 (sm_89+, PTX ISA 8.7+): SageAttention2++'s fast path.
__device__ __forceinline__ void mma_e4m3_f16_m16n8k32(uint32_t (&d)[2], const uint32_t (&a)[4], uint32_t b0,
                                                      uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f16.e4m3.e4m3.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, "
      "{%0, %1};\n"
      : "+r"(d[0]), "+r"(d[1])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four floats -> four e4m3 bytes (x0 in the lowest byte), round to nearest even, saturating.
__device__ __forceinline__ uint32_t pack_e4m3x4(float x0, float x1, float x2, float x3) {
  uint16_t lo, hi;
  // cvt packs its first source into the upper byte.
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(lo) : "f"(x1), "f"(x0));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(hi) : "f"(x3), "f"(x2));
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}
#endif

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, which lands in r[i].
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16-byte global -> shared copy, bypassing L1; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// 2^x with the MUFU approximation (2 ulp); exp2(-inf) = +0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ float2 unpack_half2(uint32_t v) {
  return __half22float2(*reinterpret_cast<const __half2*>(&v));
}

}  // namespace ptx
}  // namespace sageattention
