// Hopper (sm_90a) attention: INT8 Q·Kᵀ and FP8 e4m3 P·V with warpgroup MMA (wgmma.mma_async),
// TMA loads and a producer warpgroup (issue 6, second version; the notes file in
// benchmarks/results/ keeps each version's prediction and measured speed).
//
// CTA: 3 warpgroups over 128 query rows (= one Q-scale block of the mma.sync kernels, so the
// quantized operands, scales and the FP8 V operand are the sm89 kernel's; read qk_int8_attn.cuh):
//   warpgroup 0, producer: one thread issues the TMA copies (Q once; K and Vᵀ per 128-key block
//     into a ring of kStages stages) and gives its registers to the consumers (setmaxnreg);
//   warpgroups 1, 2, consumers: 64 query rows each. Warp w of consumer c owns the 16-row slab
//     4 c + w % 4 of the CTA (the wgmma accumulator rows of warp w % 4, csrc/common/wgmma.cuh), so
//     the per-thread Q scales (16-row slab, row mod 8) and K scales (64 keys, (key mod 8) / 2) apply
//     to the accumulators unchanged: one Q scale per thread, two K scales per 128-key block.
//   Producer and consumers synchronize by mbarriers only (csrc/common/tma.cuh): no CTA-wide
//   barrier in the loop; the consumers only take turns issuing matmuls (ping-pong, below).
//
// KV loop of a consumer (block j = 128 keys):
//   S_j (64 x 128, s32) = D / 32 wgmma m64n128k32.s32.s8.s8, A = Q, B = K_j, both from shared
//     memory (no Q registers to keep alive: session 3's ptxas register reuse cannot happen).
//   S_j is issued together with the previous block's P·V (intra-warpgroup overlap,
//   FlashAttention-3 §3.2): while the tensor cores compute R_{j-1}, the warpgroup's ALUs run the
//   softmax of S_j as soon as S_j lands:
//       issue S_j; issue R_{j-1} = P_{j-1} V_{j-1}; wait S_j; softmax S_j -> P_j, alpha_j;
//       wait R_{j-1}; release stage j-1; O = O alpha_{j-1} + R_{j-1}; pack P_j (e4m3).
//   R (64 x D, f32) = 4 wgmma m64nDk32.f32.e4m3.e4m3 from zero, A = P·448 as e4m3 registers,
//     B = the Vᵀ tile [D channels][128 tokens]; O += R in true FP32: two-level accumulation
//     (research notes §2.3.5) with a 128-token block.
//   Online softmax in FP32 with exp2 (qk_int8_attn_common.cuh; P = 2^(S - m + log2 448)); the
//   integer scores are dequantized by an IADD and an FFMA (dequantize_and_mask_128).
//   Ping-pong (FlashAttention-3 §3.1): named barriers 1 and 2 make the two consumers take turns
//   issuing their matmuls, so one's softmax runs under the other's wgmmas.
// Measured on the H100 (kernel only, B=4 H=32 hd128 non-causal, 16K; session 4 notes): this
// structure without ping-pong and with I2FP 710 TOPS, + ping-pong 718, + the integer trick alone
// 734, both 753 (session 3's cp.async kernel with a CTA barrier per 64 keys: 327). Nsight Compute
// (4K): issue slots 49 % busy, XU (MUFU) pipe 36 %, 4.5 cycles per issued instruction: two
// consumer warps per scheduler cannot hide the softmax's dependency chains. Session 5's IADD +
// FFMA dequantization (64 of ~650 instructions per block and warp fewer): 783 and 764 in two runs
// at hd128 (744 with the first, inexact version; within the lent GPU's spread), hd64 437 -> 471.
//
// P register packing: the S accumulator of a lane holds keys {8 t + 2 tig, 8 t + 2 tig + 1} of
// n-tile t; the e4m3 A fragment of k32 step kk wants K indices 4 tig .. 4 tig + 3 (+16) — the
// mma.m16n8k32 pair of layouts, so the V token permutation inside each 16-token group
// (_ops.fp8_v_operand) lets P be packed without shuffles (pack_p_e4m3, shared with sm89).
//
// Shared memory: Q [128 rows][D], K [128 keys][D] and Vᵀ [D][128 tokens] tiles, int8/e4m3, in the
// swizzled K-major layout TMA writes and wgmma reads (wgmma_desc_swizzled): 128-byte rows with the
// 128B swizzle, or 64-byte rows (K and Q at hd64) with the 64B swizzle. Tails: TMA zero-fills
// rows past L_q / L_k and tokens past L_pad; scores past L_k are masked to -inf.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <utility>

#include "../common/mma.cuh"
#include "../common/tma.cuh"
#include "../common/wgmma.cuh"
#include "qk_int8_attn_common.cuh"
#include "qk_int8_attn_params.h"

namespace sageattention {
namespace qattn {

template <int D>
struct Sm90Tiles {
  static constexpr int kConsumers = 2;                    // warpgroups of 64 query rows
  static constexpr int kRows = 64 * kConsumers;           // query rows per CTA (one Q-scale block)
  static constexpr int kThreads = 128 * (kConsumers + 1);  // + the producer warpgroup
  static constexpr int kBlockK = 128;                      // keys per KV step
  static constexpr int kStages = 3;                        // K/Vᵀ ring depth
  static constexpr int kQBytes = kRows * D;
  static constexpr int kKBytes = kBlockK * D;
  static constexpr int kVBytes = D * kBlockK;
  static constexpr int kQOffset = 0;
  static constexpr int kKOffset = kQBytes;
  static constexpr int kVOffset = kKOffset + kStages * kKBytes;
  static constexpr int kBarOffset = kVOffset + kStages * kVBytes;  // q_full, full[kStages], empty[kStages]
  static constexpr int kBytes = kBarOffset + 8 * (1 + 2 * kStages);
  static constexpr int kAlign = 1024;  // 128B-swizzle atom: tiles start on 8-row boundaries
  static constexpr int kSmem = kBytes + kAlign;
  static_assert(kRows == kCtaQ, "a CTA is one Q-scale block (scales laid out per 128 rows)");
  static_assert(kBlockK == 2 * kCtaK, "a KV step covers two 64-key K-scale blocks");
  static_assert(kQBytes % kAlign == 0 && kKBytes % kAlign == 0 && kVBytes % kAlign == 0, "tiles stay aligned");
  // Registers: 128 (producer) x 24 + 256 (consumers) x 240 = 64512 <= 65536 per SM.
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
};

// int32 scores to floats without a conversion instruction: 1.5 · 2^23 + x is exact in fp32 for
// |x| < 2^22, and its bits are the int32 bits of x + 0x4B400000 (one IADD on the full-rate
// integer pipe; I2FP is slower, session 4 notes).
constexpr float kScoreBias = 12582912.0f;  // 1.5 · 2^23
constexpr int32_t kScoreBiasBits = 0x4B400000;

// Dequantize the s32 scores of one 128-key block (two K scales: keys 0-63 and 64-127) and mask
// them: s = (kScoreBias + x) · dq - kScoreBias · dq as one FFMA after the IADD, instead of the
// FADD that removes the bias and then the FMUL. Exact as a product: dq is first cut to 22
// significant bits (its low 2 mantissa bits cleared, a relative change below 2^-22), so that
// kScoreBias · dq = 3 · dq · 2^22 needs at most 24 bits and the constant is exact; the FFMA then
// rounds x · dq once, as the FMUL did. Without the cut the constant's rounding (up to 0.75 dq) is
// one offset per 64 keys: invisible at randn scales but up to hundreds of log2 units with 1e4
// outliers (dq ~ 10^3), and it moved the LSE by 1.2e-4 against the emulation (H100, session 5).
// The full fold (dq inside the exponent's FFMA, saving the max's input FMUL too) made ptxas spill
// 384 bytes at the consumers' 240 registers; this one does not.
template <int kNT>
__device__ __forceinline__ void dequantize_and_mask_128(float (&s)[kNT][4], const int32_t (&s_int)[kNT * 4],
                                                        float dq_lo, float dq_hi, const AttnParams& p, int kv0,
                                                        int warp_row0, int group, int tig) {
  const float dq[2] = {__int_as_float(__float_as_int(dq_lo) & ~3), __int_as_float(__float_as_int(dq_hi) & ~3)};
  const float offset[2] = {-kScoreBias * dq[0], -kScoreBias * dq[1]};
#pragma unroll
  for (int t = 0; t < kNT; ++t) {
    const int h = t < kNT / 2 ? 0 : 1;
#pragma unroll
    for (int e = 0; e < 4; ++e) s[t][e] = fmaf(__int_as_float(s_int[4 * t + e] + kScoreBiasBits), dq[h], offset[h]);
  }
  mask_scores<kNT>(s, p, kv0, warp_row0, group, tig);
}

// Schedule variants, for measuring on the GPU (experiment builds only: -DSAGEATTN_SM90_VARIANTS compiles
// them all, SAGEATTN_SM90_VARIANT=N picks one per launch; default builds hold variant 0). In variant
// 0's SASS (nvcc 13.0, python benchmarks/dev/sm90_sass.py) ptxas puts the wait for R_{j-1}
// (WARPGROUP.DEPBAR) at instruction 438 of the 819 of the hd128 loop, right after the masking
// branch, and the 64 O FFMAs of R_{j-1} with the row max: the max, all 64 exp2 (590-810) and the
// packing of P_j wait for R_{j-1}, so the softmax overlaps only S_j's dequantization. Bits:
//   1: the O update after the softmax: a data dependency on the new row sums (l·0 + alpha, exact)
//      keeps the 64 FFMAs out of the max and the exps (first exp2 at 501; the wait stays at 440).
//   2: tree row max (4 partial maxima per row) instead of one 16-deep FMNMX chain per row.
//   4: ablation, timing only, wrong results: no exp2 (P = S - m): what MUFU.EX2 costs.
//   8: a quarter of the exps (n-tiles 3, 7, 11, 15) by exp2_poly on the FMA pipe.
//  16: a basic-block boundary (a vote and a never-taken branch) before the wait for R_{j-1}: the
//      wait moves after the last exp2 (724 of 825), so R_{j-1} runs under the whole softmax.
// Two P buffers (loop unrolled by two, P_j packed before the wait) spilled 240-316 B at hd128 and
// one P buffer with a copy made ptxas serialize every wgmma (C7513): neither is a variant.
template <int D, int kVariant = 0>
__global__ void __launch_bounds__(Sm90Tiles<D>::kThreads, 1)
    QkInt8AttnSm90Kernel(const __grid_constant__ AttnParams p, const __grid_constant__ CUtensorMap q_map,
                         const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map) {
#ifdef SAGEATTN_WGMMA_ENABLED
  using T = Sm90Tiles<D>;
  constexpr int kNT = T::kBlockK / 8;  // S n-tiles per warp (16)
  constexpr int kDT = D / 8;           // O n-tiles per warp
  static_assert(D * 127 * 127 < (1 << 22), "dequantize_and_mask_128 needs |S| < 2^22");
  extern __shared__ uint8_t smem_raw[];
  // Dynamic shared memory is only 16-byte aligned by contract; the swizzled tiles need 1024.
  const uint32_t smem_base = (ptx::smem_addr(smem_raw) + T::kAlign - 1) & ~uint32_t(T::kAlign - 1);
  const uint32_t q_smem = smem_base + T::kQOffset;
  const uint32_t bar_q = smem_base + T::kBarOffset;
  auto bar_full = [&](int stage) { return bar_q + 8 * (1 + stage); };
  auto bar_empty = [&](int stage) { return bar_q + 8 * (1 + T::kStages + stage); };
  auto k_tile = [&](int stage) { return smem_base + T::kKOffset + stage * T::kKBytes; };
  auto v_tile = [&](int stage) { return smem_base + T::kVOffset + stage * T::kVBytes; };

  const int tid = threadIdx.x;
  const int q_block = gridDim.x - 1 - blockIdx.x;  // causal: heaviest blocks first
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int kv_head = head / p.kv_group;
  const int q0 = q_block * T::kRows;
  int num_blocks = (p.lk + T::kBlockK - 1) / T::kBlockK;
  if (p.causal) num_blocks = min(num_blocks, (min(q0 + T::kRows, p.lq) - 1) / T::kBlockK + 1);

  if (tid == 0) {
    ptx::mbarrier_init(bar_q, 1);
    for (int s = 0; s < T::kStages; ++s) {
      ptx::mbarrier_init(bar_full(s), 1);
      ptx::mbarrier_init(bar_empty(s), 4 * T::kConsumers);  // one arrival per consumer warp
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();

  if (tid < 128) {
    // ---- producer warpgroup: one thread issues every copy ----
    ptx::setmaxnreg_dec<T::kProducerRegs>();
    if (tid == 0) {
      ptx::mbarrier_arrive_expect_tx(bar_q, T::kQBytes);
      ptx::tma_load_4d(q_smem, &q_map, bar_q, 0, q0, head, batch);
      for (int block = 0; block < num_blocks; ++block) {
        const int stage = block % T::kStages;
        // Stage reuse r = block / kStages waits for the consumers' r-th release (phase r - 1).
        if (block >= T::kStages) ptx::mbarrier_wait(bar_empty(stage), ((block / T::kStages) - 1) & 1);
        ptx::mbarrier_arrive_expect_tx(bar_full(stage), T::kKBytes + T::kVBytes);
        ptx::tma_load_4d(k_tile(stage), &k_map, bar_full(stage), 0, block * T::kBlockK, kv_head, batch);
        ptx::tma_load_4d(v_tile(stage), &v_map, bar_full(stage), block * T::kBlockK, 0, kv_head, batch);
      }
    }
    return;
  }

  // ---- consumer warpgroups ----
  ptx::setmaxnreg_inc<T::kConsumerRegs>();
  const int consumer = tid / 128 - 1;
  const int slab = (tid - 128) / 32;  // 16-row slab of the CTA: 4 consumer + warp % 4
  const int lane = tid % 32;
  const int group = lane / 4;
  const int tig = lane % 4;
  const int warp_row0 = q0 + slab * kWarpQ;
  const float q_scale = lane_q_scale(p, batch, head, q_block, slab, group);
  const float* ks_base = p.k_scale + batch * p.ks_stride[0] + kv_head * p.ks_stride[1];
  const int k_group_index = p.k_groups == 1 ? 0 : tig;
  const int last_k_scale_block = (p.lk + kCtaK - 1) / kCtaK - 1;
  constexpr float p_shift = kFp8PLog2Scale;
  const uint64_t q_desc = ptx::wgmma_desc_swizzled(q_smem + consumer * 64 * D, D);

  float m_row[2] = {-INFINITY, -INFINITY};
  float l_row[2] = {0.0f, 0.0f};
  float alpha_prev[2] = {0.0f, 0.0f};  // alpha of the block whose R is in flight
  float o_acc[kDT][4];
#pragma unroll
  for (int t = 0; t < kDT; ++t) o_acc[t][0] = o_acc[t][1] = o_acc[t][2] = o_acc[t][3] = 0.0f;
  uint32_t pa[kNT / 4][4];  // P_{j-1} as e4m3 A fragments, one per k32 step

  // S_j = Q K_jᵀ, committed as one wgmma group (waits for stage j's copies first).
  auto issue_s = [&](int block, int32_t (&s_acc)[kNT * 4]) {
    const int stage = block % T::kStages;
    ptx::mbarrier_wait(bar_full(stage), (block / T::kStages) & 1);
    const uint64_t k_desc = ptx::wgmma_desc_swizzled(k_tile(stage), D);
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 32; ++kk) {
      // +32 bytes per k32 step = +2 in the descriptor's 16-byte address units.
      ptx::wgmma_s8_m64n128k32_ss(s_acc, q_desc + 2 * kk, k_desc + 2 * kk, kk > 0 ? 1 : 0);
    }
    ptx::wgmma_commit();
  };
  // R = P_j V_j from zero (e4m3), committed as one wgmma group.
  auto issue_pv = [&](int block, float (&r_acc)[kDT * 4]) {
    const uint64_t v_desc = ptx::wgmma_desc_swizzled(v_tile(block % T::kStages), 128);
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kNT / 4; ++kk) {
      if constexpr (D == 128) {
        ptx::wgmma_e4m3_m64n128k32_rs(r_acc, pa[kk], v_desc + 2 * kk, kk > 0 ? 1 : 0);
      } else {
        ptx::wgmma_e4m3_m64n64k32_rs(r_acc, pa[kk], v_desc + 2 * kk, kk > 0 ? 1 : 0);
      }
    }
    ptx::wgmma_commit();
  };
  // Softmax of S_j in place (s becomes P·448); alpha_j = 2^(m_{j-1} - m_j).
  auto softmax = [&](int block, const int32_t (&s_acc)[kNT * 4], float (&s)[kNT][4], float (&alpha)[2]) {
    const int kb = 2 * block;  // first 64-key K-scale block
    const float dq_lo = q_scale * __ldg(ks_base + kb * p.k_groups + k_group_index);
    const float dq_hi = q_scale * __ldg(ks_base + min(kb + 1, last_k_scale_block) * p.k_groups + k_group_index);
    dequantize_and_mask_128<kNT>(s, s_acc, dq_lo, dq_hi, p, block * T::kBlockK, warp_row0, group, tig);
    online_softmax<kNT, (kVariant & 2) != 0, (kVariant & 4) != 0, (kVariant & 8) != 0>(s, m_row, l_row, alpha, p_shift);
  };
  // O = O alpha + R, then the stage of R's block goes back to the producer.
  auto accumulate = [&](int block, const float (&r_acc)[kDT * 4]) {
    float a[2] = {alpha_prev[0], alpha_prev[1]};
    if constexpr ((kVariant & 1) != 0) {
      // l_row is finite, so l·0 + alpha = alpha exactly; the FFMA only orders the O update after
      // the row sums (IEEE: x·0 is not folded).
      a[0] = fmaf(l_row[0], 0.0f, a[0]);
      a[1] = fmaf(l_row[1], 0.0f, a[1]);
    }
    if (lane == 0) ptx::mbarrier_arrive(bar_empty(block % T::kStages));
#pragma unroll
    for (int t = 0; t < kDT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) o_acc[t][e] = o_acc[t][e] * a[e >> 1] + r_acc[4 * t + e];
  };

  // Ping-pong (FlashAttention-3 §3.1): the consumers take turns issuing their matmuls, named
  // barrier 1 + c is "consumer c may issue", so one's softmax runs under the other's matmuls.
  auto my_turn = [&] {
    asm volatile("bar.sync %0, 256;\n" ::"r"(1 + consumer) : "memory");
  };
  auto your_turn = [&] {
    asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - consumer) : "memory");
  };
  if (consumer == 1) your_turn();  // consumer 0 goes first

  ptx::mbarrier_wait(bar_q, 0);
  {
    int32_t s_acc[kNT * 4];
    float s[kNT][4];
    my_turn();
    issue_s(0, s_acc);
    your_turn();
    ptx::wgmma_wait<0>();
    softmax(0, s_acc, s, alpha_prev);
    pack_p_e4m3<kNT>(pa, s);
  }
  for (int block = 1; block < num_blocks; ++block) {
    int32_t s_acc[kNT * 4];
    float r_acc[kDT * 4];
    float s[kNT][4];
    float alpha[2];
    my_turn();
    issue_s(block, s_acc);
    issue_pv(block - 1, r_acc);
    your_turn();
    ptx::wgmma_wait<1>();  // S_j has landed; R_{j-1} may still run
    softmax(block, s_acc, s, alpha);
    if constexpr ((kVariant & 16) != 0) {
      // A basic-block boundary: ptxas schedules the wait below as early as its block allows, which
      // in variant 0 is the start of the block after the masking branch. A row sum is never
      // negative (NaN compares false), so the body never runs; the vote and branch add 6 SASS instructions.
      if (__any_sync(0xffffffffu, l_row[0] < 0.0f)) asm volatile("membar.cta;\n" ::: "memory");
    }
    ptx::wgmma_wait<0>();
    accumulate(block - 1, r_acc);
    alpha_prev[0] = alpha[0];
    alpha_prev[1] = alpha[1];
    pack_p_e4m3<kNT>(pa, s);
  }
  {
    float r_acc[kDT * 4];
    my_turn();
    issue_pv(num_blocks - 1, r_acc);
    if (consumer == 0) your_turn();  // consumer 1's last turn follows; nobody waits after it
    ptx::wgmma_wait<0>();
    accumulate(num_blocks - 1, r_acc);
  }

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
      store_o_pair(p, o_base, row, ch, o_acc[t][2 * r] * inv_l[r] * v0, o_acc[t][2 * r + 1] * inv_l[r] * v1);
    }
  }
  store_lse(p, batch, head, warp_row0, group, tig, m_row, l_row, p_shift);
#else
  __trap();  // wgmma exists only in code compiled for sm_90a (compute_90a)
#endif
}

// Tensor maps of the int8 Q, K ([B, H, L, D] via strides: dims D, L, H, B) and the e4m3 Vᵀ
// operand ([B, H_kv, D, L_pad]: dims L_pad, D, H_kv, B); strides were checked to be multiples of
// 16 bytes (check_rows_16b), as TMA requires.
template <int D>
cudaError_t make_sm90_tensor_maps(const AttnParams& p, int batch, int heads, CUtensorMap& q_map, CUtensorMap& k_map,
                                  CUtensorMap& v_map) {
  using T = Sm90Tiles<D>;
  constexpr CUtensorMapSwizzle kRowSwizzle = D == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
  const int heads_kv = heads / p.kv_group;
  auto u64 = [](int64_t x) { return static_cast<cuuint64_t>(x); };
  cudaError_t err = ptx::encode_tensor_map_u8_4d(
      &q_map, p.q, {u64(D), u64(p.lq), u64(heads), u64(batch)}, {u64(p.q_stride[2]), u64(p.q_stride[1]), u64(p.q_stride[0])},
      {D, T::kRows, 1, 1}, kRowSwizzle);
  if (err != cudaSuccess) return err;
  err = ptx::encode_tensor_map_u8_4d(
      &k_map, p.k, {u64(D), u64(p.lk), u64(heads_kv), u64(batch)}, {u64(p.k_stride[2]), u64(p.k_stride[1]), u64(p.k_stride[0])},
      {D, T::kBlockK, 1, 1}, kRowSwizzle);
  if (err != cudaSuccess) return err;
  return ptx::encode_tensor_map_u8_4d(
      &v_map, p.v, {u64(p.v_len), u64(D), u64(heads_kv), u64(batch)}, {u64(p.v_stride[2]), u64(p.v_stride[1]), u64(p.v_stride[0])},
      {T::kBlockK, D, 1, 1}, CU_TENSOR_MAP_SWIZZLE_128B);
}

// The kernel of schedule variant `variant`: every entry of kSm90Variants is instantiated in an
// experiment build (-DSAGEATTN_SM90_VARIANTS), variant 0 alone otherwise (the launcher refuses
// other values there).
template <int D, std::size_t... I>
auto sm90_kernel_for_variant(int variant, std::index_sequence<I...>) {
  auto kernel = QkInt8AttnSm90Kernel<D, 0>;
#ifdef SAGEATTN_SM90_VARIANTS
  ((variant == kSm90Variants[I] ? (kernel = QkInt8AttnSm90Kernel<D, kSm90Variants[I]>, 0) : 0), ...);
#else
  (void)variant;
#endif
  return kernel;
}

template <int D>
cudaError_t launch_qk_int8_attn_sm90(const AttnParams& params, int batch, int heads, int variant,
                                     cudaStream_t stream) {
  using T = Sm90Tiles<D>;
  CUtensorMap q_map, k_map, v_map;
  cudaError_t err = make_sm90_tensor_maps<D>(params, batch, heads, q_map, k_map, v_map);
  if (err != cudaSuccess) return err;
  auto kernel = sm90_kernel_for_variant<D>(variant, std::make_index_sequence<std::size(kSm90Variants)>());
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmem);
  if (err != cudaSuccess) return err;
  const dim3 grid((params.lq + T::kRows - 1) / T::kRows, heads, batch);
  kernel<<<grid, T::kThreads, T::kSmem, stream>>>(params, q_map, k_map, v_map);
  return cudaGetLastError();
}

}  // namespace qattn
}  // namespace sageattention
