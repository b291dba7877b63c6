// The one block-scaled FP4 MMA of the attention kernel: D[16x8] += (A*sA)[16x64] x (B*sB)[64x8].
//
// Operands are in the register layout of PTX
//   mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale.scale_vec::4X
//       .f32.e2m1.e2m1.f32.ue4m3   (selectors byte-id = 0, thread-id = 0)
// with g = lane / 4, t = lane % 4 (PTX ISA "Matrix Fragments for mma.m16n8k64", "Block Scaling
// for mma.sync"):
//   a[0]: row g,   k = 8t .. 8t+7        a[1]: row g+8, k = 8t .. 8t+7
//   a[2]: row g,   k = 32+8t .. 32+8t+7  a[3]: row g+8, k = 32+8t .. 32+8t+7
//   b[0]: col g,   k = 8t .. 8t+7        b[1]: col g,   k = 32+8t .. 32+8t+7
//   d[0], d[1]: row g, cols 2t, 2t+1;    d[2], d[3]: row g+8, cols 2t, 2t+1
//   sfa: lane 4g+0 holds the 4 scales of row g, lane 4g+1 those of row g+8 (byte i = k block
//        16i .. 16i+15); sfb: lane 4g+0 holds the 4 scales of column g. Other lanes: ignored.
//
// Two implementations, chosen at compile time by SAGEATTN3_HW_FP4_MMA:
//   1  (sm_120a, sm_121a): the hardware instruction above.
//   0  (every other target, including sm_100a/sm_103a and the sm_90 test build): software. Each
//      lane decodes its own E2M1 codes times their E4M3 scale into fp16 (exact: a code has <= 2
//      significant bits, a scale 4, and |code * scale| <= 2688 fits fp16) and issues four fp16
//      mma.sync.m16n8k16 with fp32 accumulation. The k order inside those four MMAs is a
//      permutation of the hardware's, identical for A and B, so the sum is the same dot product.
//      The scale registers are read back from lanes 4g / 4g+1 exactly as the hardware reads them,
//      so a test run of the software path also checks how the kernel builds sfa/sfb.
// nvcc 13.0's ptxas rejects `mma ... block_scale` for sm_100a/sm_103a ("not supported on .target
// 'sm_100a'"); datacenter Blackwell's block-scaled MMA is tcgen05.mma (tensor memory), which this
// kernel does not use yet. So on sm_100a/sm_103a this kernel runs the software MMA: correct, not fast.
//
// Nothing here has executed on a Blackwell GPU. The sm_120a hardware path is compiled only; the
// software path is what the H100 tests execute (build with SAGEATTN3_EMULATED_MMA_BUILD=1).

#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "nvfp4.cuh"

#if defined(__CUDA_ARCH__) && !defined(SAGEATTN3_FORCE_SOFTWARE_MMA) && \
    (defined(__CUDA_ARCH_FEAT_SM120_ALL) || defined(__CUDA_ARCH_FEAT_SM121_ALL))
#define SAGEATTN3_HW_FP4_MMA 1
#else
#define SAGEATTN3_HW_FP4_MMA 0
#endif

namespace sageattn3 {

constexpr unsigned kFullMask = 0xffffffffu;

#if !SAGEATTN3_HW_FP4_MMA
namespace detail {

// Two E2M1 codes (one byte: element 2j low nibble, 2j+1 high nibble) -> fp16x2 of their values.
// Moving the 3 magnitude bits to bit 9 makes an fp16 whose value is the E2M1 value times 2^-14
// (for the subnormal 0.5 as for the normal values); one exact multiply by 2^14 fixes that.
__device__ __forceinline__ __half2 decode_e2m1x2(uint32_t byte) {
  const uint32_t bits = ((byte & 0x7u) << 9) | ((byte & 0x8u) << 12) | ((byte & 0x70u) << 21) |
                        ((byte & 0x80u) << 24);
  const __half2 raw = *reinterpret_cast<const __half2*>(&bits);
  return __hmul2(raw, __half2half2(__ushort_as_half(0x7400)));  // 0x7400 = 2^14
}

__device__ __forceinline__ uint32_t half2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

__device__ __forceinline__ uint32_t dequant_pair(uint32_t word, int byte, __half2 scale) {
  return half2_bits(__hmul2(decode_e2m1x2((word >> (8 * byte)) & 0xffu), scale));
}

__device__ __forceinline__ void mma_f16_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                 uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace detail
#endif

// d += (a * sfa) x (b * sfb); see the file comment for the layouts. Every lane of the warp must call it.
__device__ __forceinline__ void fp4_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                        uint32_t sfa, uint32_t sfb) {
#if SAGEATTN3_HW_FP4_MMA
  const uint16_t zero = 0;
  asm volatile(
      "mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale.scale_vec::4X"
      ".f32.e2m1.e2m1.f32.ue4m3 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3}, "
      "%10, {%11,%12}, %13, {%11,%12};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(sfa), "h"(zero), "h"(zero),
        "r"(sfb));
#else
  const int lane = threadIdx.x & 31;
  const int t = lane & 3;
  const int quad = lane & ~3;
  const uint32_t sfa_g = __shfl_sync(kFullMask, sfa, quad);       // row g
  const uint32_t sfa_g8 = __shfl_sync(kFullMask, sfa, quad | 1);  // row g + 8
  const uint32_t sfb_g = __shfl_sync(kFullMask, sfb, quad);       // column g
  // This lane's k indices 8t..8t+7 lie in scale block t/2, 32+8t.. in block 2 + t/2.
  __half2 sa_g[2], sa_g8[2], sb[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int shift = 8 * (2 * half + (t >> 1));
    sa_g[half] = __half2half2(nvfp4::e4m3_to_half(sfa_g >> shift));
    sa_g8[half] = __half2half2(nvfp4::e4m3_to_half(sfa_g8 >> shift));
    sb[half] = __half2half2(nvfp4::e4m3_to_half(sfb_g >> shift));
  }
  // Step s takes this lane's elements 4s'..4s'+3 of the first (s < 2) or second k half: in the
  // fp16 m16n8k16 layout the lane owns k' = 2t, 2t+1 (a regs 0/1, b reg 0) and 2t+8, 2t+9
  // (a regs 2/3, b reg 1) of rows g / g+8 and column g, so A and B pair up the same original k.
#pragma unroll
  for (int step = 0; step < 4; ++step) {
    const int half = step >> 1;
    const int byte0 = (step & 1) * 2;
    const uint32_t fa[4] = {
        detail::dequant_pair(a[2 * half], byte0, sa_g[half]),
        detail::dequant_pair(a[2 * half + 1], byte0, sa_g8[half]),
        detail::dequant_pair(a[2 * half], byte0 + 1, sa_g[half]),
        detail::dequant_pair(a[2 * half + 1], byte0 + 1, sa_g8[half]),
    };
    const uint32_t bword = half ? b1 : b0;
    detail::mma_f16_m16n8k16(d, fa, detail::dequant_pair(bword, byte0, sb[half]),
                             detail::dequant_pair(bword, byte0 + 1, sb[half]));
  }
#endif
}

}  // namespace sageattn3
