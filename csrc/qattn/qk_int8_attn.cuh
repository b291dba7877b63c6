// Attention with INT8 Q·Kᵀ (mma.sync m16n8k32 s8) and a 16-bit or FP8 P·V, for sm80 and sm89+.
//
// Algorithm (research notes §2.1-2.4; SageAttention2 Algorithm 1): FlashAttention-2 tiling with an
// online softmax in FP32 and exp2. Per CTA kCtaQ = 128 query rows, 8 warps of 16 rows each; the
// KV loop walks kCtaK = 64 keys per step with K/V double-buffered in shared memory by cp.async.
//
//   S    = (Q_int8 · K_int8ᵀ) · q_scale · k_scale · qk_scale     (qk_scale: into the log2 domain)
//   m'   = max(m, rowmax S);  P = 2^(S - m' + p_shift);  l = l · 2^(m - m') + rowsum P
//   O    = O · 2^(m - m') + P · V;   at the end O / l (and · v_scale per channel for FP8 V)
//
// Per-thread quantization (SageAttention2 §3.2): a lane's S fragment covers query rows
// {group, group + 8} of its warp's 16 rows and keys {8 j + 2 tig, 8 j + 2 tig + 1}, so with Q
// scales per (16-row slab, row mod 8) and K scales per (64-key block, (key mod 8) / 2) every lane
// dequantizes with one Q scale and one K scale (per-warp / per-block scales: groups of 1).
//
// P·V variants (template PvMode):
//   kF16Acc32     f16 P, f16 V, mma f32 accumulate straight into O           ("fp32")
//   kF16Acc16Buf  f16 mma from zero over one 64-key block, added to f32 O   ("fp16+fp32")
//   kF16Acc16     O itself accumulated in f16 registers                     ("fp16")
//   kF8Acc32      e4m3 P·448, e4m3 V, f32-accumulating mma straight into O   ("fp32")
//   kF8Acc32Buf   same, from zero per 64-key block, then a true f32 add     ("fp32+fp32")
//   kF8Acc16Buf   f16-accumulating e4m3 mma per 64-key block, f32 add      ("fp32+fp16", 2++)
//
// FP8 V operand layout (built by the Python wrapper): [B, H_kv, D, L_pad] e4m3, tokens
// contiguous, L_pad a multiple of 64, and tokens permuted inside each group of 16 by
// [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15]: the A operand of the k32 MMA wants
// keys 4 tig .. 4 tig + 3 in one register while the S fragment holds keys {2 tig, 2 tig + 1,
// 2 tig + 8, 2 tig + 9}, so the MMA's K index p stands for key perm[p] and P needs no shuffles.
//
// Shared-memory rows are padded by 16 bytes so that the 8 row addresses of each ldmatrix phase
// fall in 8 different 16-byte bank groups (pitch / 16 is odd).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../common/mma.cuh"
#include "qk_int8_attn_common.cuh"
#include "qk_int8_attn_params.h"

namespace sageattention {
namespace qattn {

template <int D, PvMode M>
struct Smem {
  static constexpr int kQPitch = D + kPad;                          // int8 Q row
  static constexpr int kKPitch = D + kPad;                          // int8 K row
  static constexpr int kVPitch = is_fp8(M) ? kCtaK + kPad : 2 * D + kPad;  // e4m3 Vᵀ row / f16 V row
  static constexpr int kVRows = is_fp8(M) ? D : kCtaK;
  static constexpr int kQBytes = kCtaQ * kQPitch;
  static constexpr int kKBytes = kCtaK * kKPitch;
  static constexpr int kVBytes = kVRows * kVPitch;
  static constexpr int kTotal = kQBytes + 2 * kKBytes + 2 * kVBytes;
};

template <int D, PvMode M>
__global__ void __launch_bounds__(kThreads) QkInt8AttnKernel(const AttnParams p) {
  using S = Smem<D, M>;
  constexpr bool kFp8 = is_fp8(M);
  constexpr int kNT = kCtaK / 8;  // S n-tiles per warp
  constexpr int kDT = D / 8;      // O n-tiles per warp
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* q_smem = smem;
  uint8_t* k_smem = smem + S::kQBytes;
  uint8_t* v_smem = k_smem + 2 * S::kKBytes;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int group = lane / 4;
  const int tig = lane % 4;
  // Reversed order: with a causal mask the last query blocks have the most keys; start them first.
  const int q_block = gridDim.x - 1 - blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int kv_head = head / p.kv_group;
  const int q0 = q_block * kCtaQ;

  const int8_t* q_base = p.q + batch * p.q_stride[0] + head * p.q_stride[1];
  const int8_t* k_base = p.k + batch * p.k_stride[0] + kv_head * p.k_stride[1];
  const uint8_t* v_base = static_cast<const uint8_t*>(p.v) +
                          (batch * p.v_stride[0] + kv_head * p.v_stride[1]) * (kFp8 ? 1 : 2);

  const int num_kv_blocks = num_kv_blocks_for(p, q0);

  // ---- async tile loads (16-byte chunks; rows past the end are zero-filled) ----
  auto load_kv = [&](int block, int stage) {
    const int kv0 = block * kCtaK;
    constexpr int kKChunks = D / 16;
    uint8_t* ks = k_smem + stage * S::kKBytes;
    for (int c = tid; c < kCtaK * kKChunks; c += kThreads) {
      const int row = c / kKChunks, col = (c % kKChunks) * 16;
      const bool ok = kv0 + row < p.lk;
      const int8_t* src = k_base + (ok ? (kv0 + row) * p.k_stride[2] : 0) + col;
      ptx::cp_async_16(ptx::smem_addr(ks + row * S::kKPitch + col), src, ok);
    }
    uint8_t* vs = v_smem + stage * S::kVBytes;
    if constexpr (kFp8) {
      // Vᵀ rows are channels; every 64-key block lies inside the zero-padded L_pad.
      constexpr int kVChunks = kCtaK / 16;
      for (int c = tid; c < D * kVChunks; c += kThreads) {
        const int row = c / kVChunks, col = (c % kVChunks) * 16;
        const uint8_t* src = v_base + row * p.v_stride[2] + kv0 + col;
        ptx::cp_async_16(ptx::smem_addr(vs + row * S::kVPitch + col), src, true);
      }
    } else {
      constexpr int kVChunks = 2 * D / 16;
      for (int c = tid; c < kCtaK * kVChunks; c += kThreads) {
        const int row = c / kVChunks, col = (c % kVChunks) * 16;
        const bool ok = kv0 + row < p.lk;
        const uint8_t* src = v_base + (ok ? (kv0 + row) * p.v_stride[2] * 2 : 0) + col;
        ptx::cp_async_16(ptx::smem_addr(vs + row * S::kVPitch + col), src, ok);
      }
    }
  };

  load_q_tile<D, S::kQPitch, kThreads>(q_smem, q_base, p, q0, tid);
  if (num_kv_blocks > 0) load_kv(0, 0);
  ptx::cp_async_commit();

  // ---- per-thread state ----
  const int warp_row0 = q0 + warp * kWarpQ;
  const float* ks_base = p.k_scale + batch * p.ks_stride[0] + kv_head * p.ks_stride[1];
  const float q_scale = lane_q_scale(p, batch, head, q_block, warp, group);
  const int k_group_index = p.k_groups == 1 ? 0 : tig;
  const float p_shift = kFp8 ? kFp8PLog2Scale : 0.0f;

  uint32_t q_frag[D / 32][4];
  float m_row[2] = {-INFINITY, -INFINITY};
  float l_row[2] = {0.0f, 0.0f};  // this lane's partial row sums; quad-reduced at the end
  constexpr bool kO16 = M == PvMode::kF16Acc16;
  float o_acc[kO16 ? 1 : kDT][4];
  uint32_t o_h[kO16 ? kDT : 1][2];
  if constexpr (kO16) {
#pragma unroll
    for (int t = 0; t < kDT; ++t) o_h[t][0] = o_h[t][1] = 0u;
  } else {
#pragma unroll
    for (int t = 0; t < kDT; ++t) o_acc[t][0] = o_acc[t][1] = o_acc[t][2] = o_acc[t][3] = 0.0f;
  }

  for (int block = 0; block < num_kv_blocks; ++block) {
    const int stage = block & 1;
    if (block + 1 < num_kv_blocks) {
      load_kv(block + 1, stage ^ 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();
    if (block == 0) load_q_fragments<D, S::kQPitch>(q_frag, q_smem, warp, lane);
    const uint8_t* ks = k_smem + stage * S::kKBytes;
    const uint8_t* vs = v_smem + stage * S::kVBytes;
    const int kv0 = block * kCtaK;

    // ---- S = Q Kᵀ (int32) ----
    int32_t s_int[kNT][4];
#pragma unroll
    for (int t = 0; t < kNT; ++t) s_int[t][0] = s_int[t][1] = s_int[t][2] = s_int[t][3] = 0;
#pragma unroll
    for (int kk = 0; kk < D / 32; ++kk) {
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t b[4];
        const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
        ptx::ldmatrix_x4(b, ptx::smem_addr(ks + key * S::kKPitch + kk * 32 + ((lane >> 3) & 1) * 16));
        ptx::mma_s8_m16n8k32(s_int[2 * np], q_frag[kk], b[0], b[1]);
        ptx::mma_s8_m16n8k32(s_int[2 * np + 1], q_frag[kk], b[2], b[3]);
      }
    }

    // ---- dequantize, mask, online softmax ----
    const float dq = q_scale * __ldg(ks_base + block * p.k_groups + k_group_index);
    float s[kNT][4];
    dequantize_and_mask<kNT>(s, &s_int[0][0], dq, p, kv0, warp_row0, group, tig);
    float alpha[2];
    online_softmax<kNT>(s, m_row, l_row, alpha, p_shift);
    if constexpr (kO16) {
      const __half2 a0 = __float2half2_rn(alpha[0]), a1 = __float2half2_rn(alpha[1]);
#pragma unroll
      for (int t = 0; t < kDT; ++t) {
        *reinterpret_cast<__half2*>(&o_h[t][0]) = __hmul2(*reinterpret_cast<__half2*>(&o_h[t][0]), a0);
        *reinterpret_cast<__half2*>(&o_h[t][1]) = __hmul2(*reinterpret_cast<__half2*>(&o_h[t][1]), a1);
      }
    } else {
      rescale_rows<kDT>(o_acc, alpha);
    }

    // ---- O += P V ----
    if constexpr (!kFp8) {
      // P as the A operand of m16n8k16: k-step kk covers S n-tiles 2 kk and 2 kk + 1.
      uint32_t pa[kNT / 2][4];
#pragma unroll
      for (int kk = 0; kk < kNT / 2; ++kk) {
        pa[kk][0] = ptx::pack_half2(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = ptx::pack_half2(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = ptx::pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = ptx::pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t buf[2][2] = {{0u, 0u}, {0u, 0u}};
#pragma unroll
        for (int kk = 0; kk < kNT / 2; ++kk) {
          uint32_t b[4];
          const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
          const int ch = dp * 16 + (lane >> 4) * 8;
          ptx::ldmatrix_x4_trans(b, ptx::smem_addr(vs + key * S::kVPitch + ch * 2));
          if constexpr (M == PvMode::kF16Acc32) {
            ptx::mma_f16_f32_m16n8k16(o_acc[2 * dp], pa[kk], b[0], b[1]);
            ptx::mma_f16_f32_m16n8k16(o_acc[2 * dp + 1], pa[kk], b[2], b[3]);
          } else if constexpr (M == PvMode::kF16Acc16Buf) {
            ptx::mma_f16_f16_m16n8k16(buf[0], pa[kk], b[0], b[1]);
            ptx::mma_f16_f16_m16n8k16(buf[1], pa[kk], b[2], b[3]);
          } else {
            ptx::mma_f16_f16_m16n8k16(o_h[2 * dp], pa[kk], b[0], b[1]);
            ptx::mma_f16_f16_m16n8k16(o_h[2 * dp + 1], pa[kk], b[2], b[3]);
          }
        }
        if constexpr (M == PvMode::kF16Acc16Buf) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float2 top = ptx::unpack_half2(buf[h][0]), bottom = ptx::unpack_half2(buf[h][1]);
            o_acc[2 * dp + h][0] += top.x;
            o_acc[2 * dp + h][1] += top.y;
            o_acc[2 * dp + h][2] += bottom.x;
            o_acc[2 * dp + h][3] += bottom.y;
          }
        }
      }
    } else {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 890
      // P·448 as e4m3, the A operand of m16n8k32: k-step kk covers S n-tiles 4 kk .. 4 kk + 3.
      uint32_t pa[kNT / 4][4];
      pack_p_e4m3<kNT>(pa, s);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        float buf32[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        uint32_t buf16[2][2] = {{0u, 0u}, {0u, 0u}};
#pragma unroll
        for (int kk = 0; kk < kNT / 4; ++kk) {
          uint32_t b[4];
          const int ch = dp * 16 + (lane & 7) + (lane >> 4) * 8;
          ptx::ldmatrix_x4(b, ptx::smem_addr(vs + ch * S::kVPitch + kk * 32 + ((lane >> 3) & 1) * 16));
          if constexpr (M == PvMode::kF8Acc32) {
            ptx::mma_e4m3_f32_m16n8k32(o_acc[2 * dp], pa[kk], b[0], b[1]);
            ptx::mma_e4m3_f32_m16n8k32(o_acc[2 * dp + 1], pa[kk], b[2], b[3]);
          } else if constexpr (M == PvMode::kF8Acc32Buf) {
            ptx::mma_e4m3_f32_m16n8k32(buf32[0], pa[kk], b[0], b[1]);
            ptx::mma_e4m3_f32_m16n8k32(buf32[1], pa[kk], b[2], b[3]);
          } else {
            ptx::mma_e4m3_f16_m16n8k32(buf16[0], pa[kk], b[0], b[1]);
            ptx::mma_e4m3_f16_m16n8k32(buf16[1], pa[kk], b[2], b[3]);
          }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if constexpr (M == PvMode::kF8Acc32Buf) {
#pragma unroll
            for (int e = 0; e < 4; ++e) o_acc[2 * dp + h][e] += buf32[h][e];
          } else if constexpr (M == PvMode::kF8Acc16Buf) {
            const float2 top = ptx::unpack_half2(buf16[h][0]), bottom = ptx::unpack_half2(buf16[h][1]);
            o_acc[2 * dp + h][0] += top.x;
            o_acc[2 * dp + h][1] += top.y;
            o_acc[2 * dp + h][2] += bottom.x;
            o_acc[2 * dp + h][3] += bottom.y;
          }
        }
      }
#else
      __trap();  // FP8 modes are only instantiated in sources compiled for sm_89+
#endif
    }
    __syncthreads();  // the next iteration's loads overwrite this stage
  }
  ptx::cp_async_wait<0>();

  // ---- epilogue: O / l (· v_scale), LSE ----
  float inv_l[2];
  finish_row_sums(l_row, inv_l);
  const float* vs_base = kFp8 ? p.v_scale + batch * p.vs_stride[0] + kv_head * p.vs_stride[1] : nullptr;
  uint8_t* o_base = static_cast<uint8_t*>(p.o) + (batch * p.o_stride[0] + head * p.o_stride[1]) * 2;
#pragma unroll
  for (int t = 0; t < kDT; ++t) {
    const int ch = t * 8 + 2 * tig;
    float v0 = 1.0f, v1 = 1.0f;
    if constexpr (kFp8) {
      v0 = __ldg(vs_base + ch);
      v1 = __ldg(vs_base + ch + 1);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + group + r * 8;
      float x0, x1;
      if constexpr (kO16) {
        const float2 h = ptx::unpack_half2(o_h[t][r]);
        x0 = h.x;
        x1 = h.y;
      } else {
        x0 = o_acc[t][2 * r];
        x1 = o_acc[t][2 * r + 1];
      }
      x0 *= inv_l[r] * v0;
      x1 *= inv_l[r] * v1;
      store_o_pair(p, o_base, row, ch, x0, x1);
    }
  }
  store_lse(p, batch, head, warp_row0, group, tig, m_row, l_row, p_shift);
}

template <int D, PvMode M>
cudaError_t launch_qk_int8_attn(const AttnParams& params, int batch, int heads, cudaStream_t stream) {
  constexpr int kSmem = Smem<D, M>::kTotal;
  auto kernel = QkInt8AttnKernel<D, M>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (err != cudaSuccess) return err;
  const dim3 grid((params.lq + kCtaQ - 1) / kCtaQ, heads, batch);
  kernel<<<grid, kThreads, kSmem, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace qattn
}  // namespace sageattention
