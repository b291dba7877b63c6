// Per-thread pieces shared by the INT8 Q·Kᵀ attention kernels (qk_int8_attn.cuh for mma.sync on
// sm80/sm89+, qk_int8_attn_sm90.cuh for wgmma on sm90a). Both work in 16-row slabs (a warp holds
// one, or two in the mma.sync kernel at hd128) and give a lane the S fragment of mma.m16n8 (rows
// group and group + 8, keys 8 t + 2 tig + {0, 1} of n-tile t), so the dequantization, masking,
// online softmax, e4m3 packing of P and the epilogue are one code for both; only the matmuls and
// the shared-memory layouts differ.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "../common/mma.cuh"
#include "qk_int8_attn_params.h"

namespace sageattention {
namespace qattn {

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// KV blocks query rows q0 .. q0 + kRows - 1 read: all of them, or up to the last row's diagonal.
template <int kRows = kCtaQ>
__device__ __forceinline__ int num_kv_blocks_for(const AttnParams& p, int q0) {
  int blocks = (p.lk + kCtaK - 1) / kCtaK;
  if (p.causal) {
    const int last_row = min(q0 + kRows, p.lq) - 1;  // top-left aligned: row i sees keys 0..i
    blocks = min(blocks, last_row / kCtaK + 1);
  }
  return blocks;
}

// The CTA's kRows x D int8 Q tile into rows of kQPitch bytes (16-byte cp.async chunks; rows past
// L_q are zero-filled). Both kernels keep Q in this padded layout for ldmatrix.
template <int D, int kQPitch, int kNumThreads, int kRows = kCtaQ>
__device__ __forceinline__ void load_q_tile(uint8_t* q_smem, const int8_t* q_base, const AttnParams& p, int q0,
                                            int tid) {
  constexpr int kChunks = D / 16;
  for (int c = tid; c < kRows * kChunks; c += kNumThreads) {
    const int row = c / kChunks, col = (c % kChunks) * 16;
    const bool ok = q0 + row < p.lq;
    const int8_t* src = q_base + (ok ? (q0 + row) * p.q_stride[2] : 0) + col;
    ptx::cp_async_16(ptx::smem_addr(q_smem + row * kQPitch + col), src, ok);
  }
}

// The warp's 16 Q rows as the A fragments of the k32 INT8 MMA (mma.m16n8k32 and, per warp, wgmma
// m64nNk32 with A from registers), one per 32 channels.
template <int D, int kQPitch>
__device__ __forceinline__ void load_q_fragments(uint32_t (&q_frag)[D / 32][4], const uint8_t* q_smem, int warp,
                                                 int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 32; ++kk) {
    const int row = warp * kWarpQ + (lane & 7) + ((lane >> 3) & 1) * 8;
    ptx::ldmatrix_x4(q_frag[kk], ptx::smem_addr(q_smem + row * kQPitch + kk * 32 + (lane >> 4) * 16));
  }
}

// This lane's Q scale (its warp slab's group; per-warp scales: one group) times qk_scale.
__device__ __forceinline__ float lane_q_scale(const AttnParams& p, int batch, int head, int q_block, int warp,
                                              int group) {
  const float* qs_base = p.q_scale + batch * p.qs_stride[0] + head * p.qs_stride[1];
  return qs_base[(q_block * kWarps + warp) * p.q_groups + (p.q_groups == 1 ? 0 : group)] * p.qk_scale;
}

// -inf where the key is past L_k or (causal, top-left aligned) after the row, for the kNT * 8
// keys from kv0 that the lane's n-tiles cover (64 for mma.sync, 128 for the sm90 kernel).
template <int kNT>
__device__ __forceinline__ void mask_scores(float (&s)[kNT][4], const AttnParams& p, int kv0, int warp_row0,
                                            int group, int tig) {
  constexpr int kKeys = kNT * 8;
  const bool need_mask = kv0 + kKeys > p.lk || (p.causal && kv0 + kKeys - 1 > warp_row0);
  if (need_mask) {
#pragma unroll
    for (int t = 0; t < kNT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = kv0 + t * 8 + 2 * tig + (e & 1);
        const int row = warp_row0 + group + (e >> 1) * 8;
        if (key >= p.lk || (p.causal && key > row)) s[t][e] = -INFINITY;
      }
  }
}

// s = s_int · dq, then -inf where the key is past L_k or (causal) after the row. `s_int` is the
// lane's int32 S accumulator, element e of n-tile t at 4 t + e (mma.m16n8 and wgmma alike).
template <int kNT>
__device__ __forceinline__ void dequantize_and_mask(float (&s)[kNT][4], const int32_t* s_int, float dq,
                                                    const AttnParams& p, int kv0, int warp_row0, int group,
                                                    int tig) {
#pragma unroll
  for (int t = 0; t < kNT; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[t][e] = static_cast<float>(s_int[4 * t + e]) * dq;
  mask_scores<kNT>(s, p, kv0, warp_row0, group, tig);
}

// 2^x on the FMA and integer pipes instead of MUFU.EX2 (FlashAttention-4's trick; the sm90 kernel's
// schedule variant 8): x = n + f with n = round(x) (the 1.5·2^23 rounding add), 2^f for f in
// [-0.5, 0.5] by a degree-4 polynomial fitted for the relative error in float32 (2.7e-6 at most:
// tests/test_exp2_poly.py; MUFU.EX2 is ~1e-7, e4m3 P keeps 2^-4), n added to the exponent bits.
// x is clamped at -125 first, so the result stays a normal float and masked keys (-inf) give
// 2^-125 (0 once P is e4m3; < 2^-100 of any row sum, which holds a 448 or more). Host and device,
// so the test runs the same code on the CPU.
__host__ __device__ __forceinline__ float exp2_poly(float x) {
  x = fmaxf(x, -125.0f);
  const float t = x + 12582912.0f;          // 1.5·2^23 + round(x): round(x) in the low mantissa bits
  const float f = x - (t - 12582912.0f);    // exact: x - round(x)
  float p = fmaf(0.009575989097356796f, f, 0.05591835454106331f);
  p = fmaf(p, f, 0.2402459979057312f);
  p = fmaf(p, f, 0.6931217312812805f);
  p = fmaf(p, f, 0.9999992847442627f);
  uint32_t p_bits, t_bits;
  memcpy(&p_bits, &p, 4);
  memcpy(&t_bits, &t, 4);
  p_bits += t_bits << 23;  // round(x) · 2^23 modulo 2^32: the exponent field moves by round(x)
  float y;
  memcpy(&y, &p_bits, 4);
  return y;
}

// Online softmax step (log2 domain): new row max m, P = 2^(s - m + p_shift) in place of s, row
// sums l rescaled by alpha = 2^(m_old - m_new) plus this block's; alpha is returned for O.
template <int kNT, bool kTreeMax = false, bool kNoExp = false, bool kPolyQuarter = false>
__device__ __forceinline__ void online_softmax(float (&s)[kNT][4], float (&m_row)[2], float (&l_row)[2],
                                               float (&alpha)[2], float p_shift) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = m_row[r];
    if constexpr (kTreeMax && kNT % 4 == 0) {
      float part[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) part[i] = fmaxf(s[i][2 * r], s[i][2 * r + 1]);
#pragma unroll
      for (int t = 4; t < kNT; ++t) part[t % 4] = fmaxf(part[t % 4], fmaxf(s[t][2 * r], s[t][2 * r + 1]));
      mx = fmaxf(mx, fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3])));
    } else {
#pragma unroll
      for (int t = 0; t < kNT; ++t) mx = fmaxf(mx, fmaxf(s[t][2 * r], s[t][2 * r + 1]));
    }
    mx = quad_max(mx);
    // A row that has seen only masked keys keeps m = -inf; subtract 0 then so P = 0, not NaN.
    const float m_use = mx == -INFINITY ? 0.0f : mx;
    alpha[r] = ptx::fast_exp2(m_row[r] - m_use);
    m_row[r] = mx;
    const float base = m_use - p_shift;
    float sum = 0.0f;
#pragma unroll
    for (int t = 0; t < kNT; ++t) {
      if constexpr (kNoExp) {  // dev ablation: timing without MUFU.EX2 (wrong results)
        s[t][2 * r] = s[t][2 * r] - base;
        s[t][2 * r + 1] = s[t][2 * r + 1] - base;
      } else if (kPolyQuarter && t % 4 == 3) {  // dev variant: a quarter of the exps off MUFU
        s[t][2 * r] = exp2_poly(s[t][2 * r] - base);
        s[t][2 * r + 1] = exp2_poly(s[t][2 * r + 1] - base);
      } else {
        s[t][2 * r] = ptx::fast_exp2(s[t][2 * r] - base);
        s[t][2 * r + 1] = ptx::fast_exp2(s[t][2 * r + 1] - base);
      }
      sum += s[t][2 * r] + s[t][2 * r + 1];
    }
    l_row[r] = l_row[r] * alpha[r] + sum;
  }
}

template <int kDT>
__device__ __forceinline__ void rescale_rows(float (&o_acc)[kDT][4], const float (&alpha)[2]) {
#pragma unroll
  for (int t = 0; t < kDT; ++t) {
    o_acc[t][0] *= alpha[0];
    o_acc[t][1] *= alpha[0];
    o_acc[t][2] *= alpha[1];
    o_acc[t][3] *= alpha[1];
  }
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 890
// P·448 as e4m3, the A operand of a k32 MMA (mma.m16n8k32 or wgmma m64nNk32): k-step kk covers S
// n-tiles 4 kk .. 4 kk + 3; with the V token permutation of _ops.fp8_v_operand no shuffles.
template <int kNT>
__device__ __forceinline__ void pack_p_e4m3(uint32_t (&pa)[kNT / 4][4], const float (&s)[kNT][4]) {
#pragma unroll
  for (int kk = 0; kk < kNT / 4; ++kk) {
    const int t = 4 * kk;
    pa[kk][0] = ptx::pack_e4m3x4(s[t][0], s[t][1], s[t + 1][0], s[t + 1][1]);
    pa[kk][1] = ptx::pack_e4m3x4(s[t][2], s[t][3], s[t + 1][2], s[t + 1][3]);
    pa[kk][2] = ptx::pack_e4m3x4(s[t + 2][0], s[t + 2][1], s[t + 3][0], s[t + 3][1]);
    pa[kk][3] = ptx::pack_e4m3x4(s[t + 2][2], s[t + 2][3], s[t + 3][2], s[t + 3][3]);
  }
}
#endif

// Epilogue, first step: quad-reduce the row sums (l_row becomes the full sum) and return 1 / l
// (0 for a row with no visible key, L_k = 0: it writes zeros).
__device__ __forceinline__ void finish_row_sums(float (&l_row)[2], float (&inv_l)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(l_row[r]);
    l_row[r] = l;
    inv_l[r] = l > 0.0f ? 1.0f / l : 0.0f;
  }
}

// Channels ch, ch + 1 of one output row, as fp16 or bf16 (rows past L_q are not written).
__device__ __forceinline__ void store_o_pair(const AttnParams& p, uint8_t* o_base, int row, int ch, float x0,
                                             float x1) {
  if (row < p.lq) {
    uint8_t* dst = o_base + (row * p.o_stride[2] + ch) * 2;
    if (p.out_bf16) {
      *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(x0, x1);
    } else {
      *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(x0, x1);
    }
  }
}

// Base-2 LSE of the lane's two rows (one lane per quad writes), -inf for a row with no key.
__device__ __forceinline__ void store_lse(const AttnParams& p, int batch, int head, int warp_row0, int group,
                                          int tig, const float (&m_row)[2], const float (&l_row)[2],
                                          float p_shift) {
  if (p.lse != nullptr && tig == 0) {
    float* lse_base = p.lse + batch * p.lse_stride[0] + head * p.lse_stride[1];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + group + r * 8;
      if (row < p.lq) {
        lse_base[row] = l_row[r] > 0.0f ? m_row[r] - p_shift + __log2f(l_row[r]) : -INFINITY;
      }
    }
  }
}

}  // namespace qattn
}  // namespace sageattention
