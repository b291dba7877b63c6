// Torch-free PTX wrappers for the Hopper (sm_90a) warpgroup MMA: wgmma.mma_async with A from
// registers and B from shared memory, its shared-memory matrix descriptor, and the fences.
//
// Fragment layouts (PTX ISA "Register fragments and shared memory matrix layouts" for wgmma):
// a warpgroup is 4 consecutive warps; warp w (= (threadIdx.x / 32) % 4) owns rows 16 w .. 16 w + 15
// of the 64-row tile, and inside its 16-row slice every register fragment has the per-warp
// layout of mma.sync (csrc/common/mma.cuh), with group = lane / 4, tig = lane % 4:
//   A m64nNk32, 8-bit:  a[0] (row group,     K 4 tig + {0..3}),  a[1] (row group + 8, same K),
//                        a[2] (row group,     K 16 + 4 tig + {0..3}), a[3] (row group + 8, same K)
//                        -> identical to the A operand of mma.m16n8k32 (ldmatrix_x4 fills it).
//   D m64nN (s32 / f32), N / 2 registers: d[4 j + 0], d[4 j + 1] = row group, cols 8 j + 2 tig + {0, 1};
//                        d[4 j + 2], d[4 j + 3] = row group + 8, same cols  (j = 0 .. N / 8 - 1)
//                        -> n-tile j of the mma.m16n8 accumulator layout.
// (The layouts the PTX ISA figures give; checked on the H100 by the diagnostics of
// tests/test_qk_int8_sv_f8_attn_sm90.py.)
//
// B operand in shared memory, no swizzle ("interleave" mode 0), K-major: the tile is made of
// core matrices of 8 rows (N) x 16 bytes (K), each 128 contiguous bytes (row r at byte 16 r).
// The descriptor gives the byte distance between core matrices adjacent along K (leading
// dimension byte offset, LBO) and along N (stride dimension byte offset, SBO). 8-bit wgmma
// supports only K-major A and B.
#pragma once

#include <cstdint>

namespace sageattention {
namespace ptx {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SAGEATTN_WGMMA_ENABLED 1
#endif

// 64-bit wgmma shared-memory matrix descriptor: bits 0-13 start address >> 4, 16-29 LBO >> 4,
// 32-45 SBO >> 4, 49-51 base offset (0: no swizzle), 62-63 swizzle mode (0: none).
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t smem_byte_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((smem_byte_addr & 0x3FFFF) >> 4);
  desc |= static_cast<uint64_t>((lbo_bytes & 0x3FFFF) >> 4) << 16;
  desc |= static_cast<uint64_t>((sbo_bytes & 0x3FFFF) >> 4) << 32;
  return desc;
}

// Swizzled K-major operand (what TMA writes with CU_TENSOR_MAP_SWIZZLE_64B/128B): rows of
// `row_bytes` = 64 or 128 bytes, each 16-byte chunk c of row r stored at chunk c ^ (r % 8)
// (128B; 64B: c ^ ((r % 8) / 2)), tiles aligned to 8 rows (1024 / 512 bytes) so base offset 0.
// SBO = 8 rows; LBO is unused because a k32 step (32 bytes) never leaves the swizzle row; the
// k-step kk is addressed by adding 32 kk bytes to the start address (the swizzle is applied by the
// hardware on the final address bits, so the tile base must be 8-row aligned).
__device__ __forceinline__ uint64_t wgmma_desc_swizzled(uint32_t smem_byte_addr, int row_bytes) {
  const uint64_t mode = row_bytes == 128 ? 1 : 2;  // 1: 128B swizzle, 2: 64B swizzle
  return wgmma_desc(smem_byte_addr, 16, 8 * row_bytes) | (mode << 62);
}

#ifdef SAGEATTN_WGMMA_ENABLED
// Orders this warpgroup's register writes (accumulators, A fragments) before later wgmma reads.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed wgmma groups of this warp are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes this thread's generic-proxy shared-memory writes (st.shared, cp.async) visible to the
// async proxy that wgmma reads its shared-memory operands through; follow with a CTA barrier.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Accumulator operands are "+r"/"+f": between wgmma_fence and wgmma_wait the compiler must not
// touch them (all uses below are fully unrolled with constant indices, so they stay in registers).
// scale_d = 0 ignores the old d (D = A * B).

// D (+)= A * B over a 64 x 128 x 32 tile, s8 x s8 -> s32 (sm_90a), both operands K-major in
// shared memory (descriptors); the accumulator layout is the one in this file's header.
__device__ __forceinline__ void wgmma_s8_m64n128k32_ss(int32_t (&d)[64], uint64_t a_desc, uint64_t b_desc,
                                                      int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "l"(a_desc), "l"(b_desc), "r"(scale_d));
}

// D (+)= A * B, e4m3 x e4m3 -> f32 (sm_90a), N = 64 / 128; A in registers as above, B K-major
// in shared memory. The tensor core keeps ~13 mantissa bits of the sum (research notes §2.3.5):
// accumulate one KV block from zero and add it to a true-FP32 O.

__device__ __forceinline__ void wgmma_e4m3_m64n64k32_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t b_desc,
                                                       int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(scale_d));
}

__device__ __forceinline__ void wgmma_e4m3_m64n128k32_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t b_desc,
                                                        int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(scale_d));
}
#endif  // SAGEATTN_WGMMA_ENABLED

}  // namespace ptx
}  // namespace sageattention
