// Hopper (sm_90a) attention: INT8 Q·Kᵀ and FP8 e4m3 P·V with warpgroup MMA (wgmma.mma_async).
//
// First increment (issue 6): correctness first, no TMA and no warp specialization yet. It keeps
// the tiles, the scale layouts and the FP8 V operand of the mma.sync kernel (qk_int8_attn.cuh,
// read its header first), so the Python side (api._cuda_quantize, _ops.fp8_v_operand) is shared:
//
//   CTA = sm90_warpgroups(D) warpgroups of 64 query rows (128 threads each). Warp w owns the
//   16-row slab 16 w .. 16 w + 15 of its CTA, because the wgmma accumulator gives warp w % 4 of a
//   warpgroup rows 16 (w % 4) .. + 15 of its 64-row tile in the mma.m16n8 layout
//   (csrc/common/wgmma.cuh). Hence the per-thread Q scales (16-row slab, row mod 8; laid out per
//   128-row block as for the mma.sync kernel) and K scales (64-key block, (key mod 8) / 2) apply
//   unchanged: one Q scale and one K scale per thread per KV block.
//   Warpgroups per CTA, measured on the H100 (kernel only, B=4 H=32, 16K, non-causal, session 3):
//   hd128: 2 (128-row CTA) 327 TOPS vs 1 (64-row CTAs, two per SM) 261; hd64: 1 264 vs 2 227.
//   The prediction was that independent 64-row CTAs would overlap one CTA's softmax with the
//   other's MMAs, which the per-block __syncthreads of a 128-row CTA prevents; at hd128 the doubled
//   K/V shared-memory fills cost more than that gained.
//   KV loop: kCtaK = 64 keys per step, K and Vᵀ double-buffered in shared memory by cp.async.
//     S (64 x 64, s32) = D / 32 x wgmma m64n64k32.s32.s8.s8, A = Q from registers (ldmatrix,
//       the mma.m16n8k32 A layout, re-read every block: see the loop), B = the K tile [64 keys][D].
//     Online softmax in FP32 with exp2 (as in qk_int8_attn.cuh: P = 2^(S - m + log2 448)).
//     R (64 x D, f32) = 2 x wgmma m64nDk32.f32.e4m3.e4m3 from zero (scale-d = 0 on the first),
//       A = P·448 as e4m3 in registers, B = the Vᵀ tile [D channels][64 tokens] (K-major);
//       then O = O · 2^(m_old - m_new) + R in true FP32 (two-level accumulation, research notes
//       §2.3.5; "fp32+fp32" with a 64-token block).
//
// P register conversion: the S accumulator of a lane holds keys {8 j + 2 tig, 8 j + 2 tig + 1}
// (j = n-tile), the e4m3 A fragment of m64nNk32 wants K indices 4 tig .. 4 tig + 3 (+16) in one
// register -- the same pair of layouts as mma.m16n8k32 on sm89, so the same V token permutation
// inside each group of 16 ([0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15], built by
// _ops.fp8_v_operand) lets P be packed without shuffles: MMA K index q of a k32 step stands for
// key perm[q]. The packing code is the sm89 kernel's.
//
// Shared memory for the wgmma B operands: no swizzle, K-major "core matrix" layout (8 rows x 16
// bytes = 128 contiguous bytes). For a tile of R rows of RB bytes: byte (row, b) lies at
//   (row / 8) * (8 RB) + (b / 16) * 128 + (row % 8) * 16 + b % 16,
// so LBO (next core matrix along K) = 128 and SBO (next 8 rows along N) = 8 RB (K: 8 D; Vᵀ: 512).
// A k32 step kk starts 2 core matrices (256 bytes) further. A copy index c = 8 (chunk + C · (row /
// 8)) + row % 8 (C = RB / 16 chunks per row) lands at byte 16 c: the cp.async loop writes
// consecutive 16-byte chunks. Q stays in the padded row layout of the sm89 kernel (ldmatrix).
//
// TODO(issue 6, next increments): TMA (cp.async.bulk.tensor + mbarrier, 2-3 stages) into 128B-
// swizzled tiles, a producer warp with setmaxnreg and consumer warpgroups, CTA_K = 128 with
// overlapped wgmma (wait_group 1) and softmax, skipping fully masked causal blocks per warpgroup.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../common/mma.cuh"
#include "../common/wgmma.cuh"
#include "qk_int8_attn_common.cuh"
#include "qk_int8_attn_params.h"

namespace sageattention {
namespace qattn {

template <int D>
struct Sm90Smem {
  static constexpr int kRows = 64 * sm90_warpgroups(D);  // query rows per CTA
  static constexpr int kThreads = 128 * sm90_warpgroups(D);
  static constexpr int kQPitch = D + kPad;   // padded int8 Q row (ldmatrix, conflict-free)
  static constexpr int kQBytes = kRows * kQPitch;
  static constexpr int kKBytes = kCtaK * D;  // core-matrix layout, 64 keys x D bytes
  static constexpr int kVBytes = D * kCtaK;  // core-matrix layout, D channels x 64 tokens
  static constexpr uint32_t kLbo = 128;      // K-adjacent core matrices are contiguous
  static constexpr uint32_t kKSbo = 8 * D;   // next 8 keys
  static constexpr uint32_t kVSbo = 8 * kCtaK;  // next 8 channels
  static constexpr int kTotal = kQBytes + 2 * kKBytes + 2 * kVBytes;
  static_assert(kQBytes % 128 == 0 && kKBytes % 128 == 0 && kVBytes % 128 == 0, "tiles stay 128-byte aligned");
};

template <int D>
__global__ void __launch_bounds__(Sm90Smem<D>::kThreads, 3 - sm90_warpgroups(D))
    QkInt8AttnSm90Kernel(const AttnParams p) {
#ifdef SAGEATTN_WGMMA_ENABLED
  using S = Sm90Smem<D>;
  constexpr int kNT = kCtaK / 8;  // S n-tiles per warp (8)
  constexpr int kDT = D / 8;      // O n-tiles per warp
  constexpr int kRows = S::kRows, kThreads = S::kThreads;
  static_assert(kCtaQ % kRows == 0, "a CTA lies inside one 128-row Q-scale block");
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* q_smem = smem;
  uint8_t* k_smem = smem + S::kQBytes;
  uint8_t* v_smem = k_smem + 2 * S::kKBytes;

  const int tid = threadIdx.x;
  const int warp = tid / 32;  // 16-row slab of the CTA (warp w % 4 of warpgroup w / 4)
  const int lane = tid % 32;
  const int group = lane / 4;
  const int tig = lane % 4;
  const int q_block = gridDim.x - 1 - blockIdx.x;  // causal: heaviest blocks first
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int kv_head = head / p.kv_group;
  const int q0 = q_block * kRows;

  const int8_t* q_base = p.q + batch * p.q_stride[0] + head * p.q_stride[1];
  const int8_t* k_base = p.k + batch * p.k_stride[0] + kv_head * p.k_stride[1];
  const uint8_t* v_base = static_cast<const uint8_t*>(p.v) + batch * p.v_stride[0] + kv_head * p.v_stride[1];

  const int num_kv_blocks = num_kv_blocks_for<kRows>(p, q0);

  // Copy index c -> (row, chunk) such that the destination is byte 16 c of the core-matrix tile.
  auto load_kv = [&](int block, int stage) {
    const int kv0 = block * kCtaK;
    constexpr int kKChunks = D / 16;
    uint8_t* ks = k_smem + stage * S::kKBytes;
    for (int c = tid; c < kCtaK * kKChunks; c += kThreads) {
      const int rest = c >> 3;
      const int chunk = rest % kKChunks;
      const int row = (rest / kKChunks) * 8 + (c & 7);
      const bool ok = kv0 + row < p.lk;
      const int8_t* src = k_base + (ok ? (kv0 + row) * p.k_stride[2] : 0) + chunk * 16;
      ptx::cp_async_16(ptx::smem_addr(ks + c * 16), src, ok);
    }
    // Vᵀ rows are channels; every 64-token block lies inside the zero-padded L_pad.
    constexpr int kVChunks = kCtaK / 16;
    uint8_t* vs = v_smem + stage * S::kVBytes;
    for (int c = tid; c < D * kVChunks; c += kThreads) {
      const int rest = c >> 3;
      const int chunk = rest % kVChunks;
      const int ch = (rest / kVChunks) * 8 + (c & 7);
      const uint8_t* src = v_base + ch * p.v_stride[2] + kv0 + chunk * 16;
      ptx::cp_async_16(ptx::smem_addr(vs + c * 16), src, true);
    }
  };

  load_q_tile<D, S::kQPitch, kThreads, kRows>(q_smem, q_base, p, q0, tid);
  if (num_kv_blocks > 0) load_kv(0, 0);
  ptx::cp_async_commit();

  const int warp_row0 = q0 + warp * kWarpQ;
  const float* ks_base = p.k_scale + batch * p.ks_stride[0] + kv_head * p.ks_stride[1];
  // Q scales come per 128-row block in 8 slabs of 16 rows (the mma.sync kernels' layout).
  const float q_scale = lane_q_scale(p, batch, head, q0 / kCtaQ, (q0 % kCtaQ) / kWarpQ + warp, group);
  const int k_group_index = p.k_groups == 1 ? 0 : tig;
  constexpr float p_shift = kFp8PLog2Scale;

  float m_row[2] = {-INFINITY, -INFINITY};
  float l_row[2] = {0.0f, 0.0f};
  float o_acc[kDT][4];
#pragma unroll
  for (int t = 0; t < kDT; ++t) o_acc[t][0] = o_acc[t][1] = o_acc[t][2] = o_acc[t][3] = 0.0f;

  for (int block = 0; block < num_kv_blocks; ++block) {
    const int stage = block & 1;
    if (block + 1 < num_kv_blocks) {
      load_kv(block + 1, stage ^ 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    // cp.async wrote through the generic proxy; wgmma reads shared memory through the async proxy.
    ptx::fence_proxy_async_smem();
    __syncthreads();
    // Q fragments are re-read from shared memory every block (D / 32 ldmatrix.x4 per warp). Loaded
    // once and kept in registers across the loop, ptxas (nvcc 13.0) reused those registers for P in
    // the hd64 build (SASS: the IGMMA A registers rewritten by F2FP before the next block's IGMMA),
    // so every block after the first multiplied P by K (H100 run, 2026-11-23, session 3).
    uint32_t q_frag[D / 32][4];
    load_q_fragments<D, S::kQPitch>(q_frag, q_smem, warp, lane);
    const uint32_t ks_addr = ptx::smem_addr(k_smem + stage * S::kKBytes);
    const uint32_t vs_addr = ptx::smem_addr(v_smem + stage * S::kVBytes);
    const int kv0 = block * kCtaK;

    // ---- S = Q Kᵀ (int32), this warpgroup's 64 x 64 tile ----
    int32_t s_acc[kNT * 4];
#pragma unroll
    for (int i = 0; i < kNT * 4; ++i) s_acc[i] = 0;
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 32; ++kk) {
      ptx::wgmma_s8_m64n64k32_rs(s_acc, q_frag[kk], ptx::wgmma_desc(ks_addr + kk * 256, S::kLbo, S::kKSbo),
                                 kk > 0 ? 1 : 0);
    }
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();

    // ---- dequantize, mask, online softmax (qk_int8_attn_common.cuh) ----
    const float dq = q_scale * __ldg(ks_base + block * p.k_groups + k_group_index);
    float s[kNT][4];
    dequantize_and_mask<kNT>(s, s_acc, dq, p, kv0, warp_row0, group, tig);
    float alpha[2];
    online_softmax<kNT>(s, m_row, l_row, alpha, p_shift);
    rescale_rows<kDT>(o_acc, alpha);

    // ---- R = P V per 64-key block from zero (e4m3 wgmma), O += R in FP32 ----
    // A fragment of k32 step kk: S n-tiles 4 kk .. 4 kk + 3 (the sm89 packing; see header).
    uint32_t pa[kNT / 4][4];
    pack_p_e4m3<kNT>(pa, s);
    float r_acc[kDT * 4];
#pragma unroll
    for (int i = 0; i < kDT * 4; ++i) r_acc[i] = 0.0f;
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kNT / 4; ++kk) {
      const uint64_t desc = ptx::wgmma_desc(vs_addr + kk * 256, S::kLbo, S::kVSbo);
      if constexpr (D == 128) {
        ptx::wgmma_e4m3_m64n128k32_rs(r_acc, pa[kk], desc, kk > 0 ? 1 : 0);
      } else {
        ptx::wgmma_e4m3_m64n64k32_rs(r_acc, pa[kk], desc, kk > 0 ? 1 : 0);
      }
    }
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();
#pragma unroll
    for (int t = 0; t < kDT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) o_acc[t][e] += r_acc[4 * t + e];
    __syncthreads();  // every warpgroup is done with this stage before it is refilled
  }
  ptx::cp_async_wait<0>();

  // ---- epilogue: O / l · v_scale, LSE (qk_int8_attn_common.cuh) ----
  float inv_l[2];
  finish_row_sums(l_row, inv_l);
  const float* vs_base = p.v_scale + batch * p.vs_stride[0] + kv_head * p.vs_stride[1];
  uint8_t* o_base = static_cast<uint8_t*>(p.o) + (batch * p.o_stride[0] + head * p.o_stride[1]) * 2;
#pragma unroll
  for (int t = 0; t < kDT; ++t) {
    const int ch = t * 8 + 2 * tig;
    const float v0 = __ldg(vs_base + ch), v1 = __ldg(vs_base + ch + 1);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + group + r * 8;
      const float x0 = o_acc[t][2 * r] * inv_l[r] * v0;
      const float x1 = o_acc[t][2 * r + 1] * inv_l[r] * v1;
      store_o_pair(p, o_base, row, ch, x0, x1);
    }
  }
  store_lse(p, batch, head, warp_row0, group, tig, m_row, l_row, p_shift);
#else
  __trap();  // wgmma exists only in code compiled for sm_90a (compute_90a)
#endif
}

template <int D>
cudaError_t launch_qk_int8_attn_sm90(const AttnParams& params, int batch, int heads, cudaStream_t stream) {
  constexpr int kSmem = Sm90Smem<D>::kTotal;
  auto kernel = QkInt8AttnSm90Kernel<D>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (err != cudaSuccess) return err;
  constexpr int kRows = Sm90Smem<D>::kRows;
  const dim3 grid((params.lq + kRows - 1) / kRows, heads, batch);
  kernel<<<grid, Sm90Smem<D>::kThreads, kSmem, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace qattn
}  // namespace sageattention
