// SageAttention3 forward: NVFP4 Q·Kᵀ, online softmax, two-level NVFP4 P, NVFP4 P·V.
//
// The accuracy model is sageattn3/reference.py (paper Alg. 1); this kernel computes the same
// quantities tile by tile:
//   S   = (φ(Q_s)·φ(K_s)ᵀ + ΔS) · sm_scale      (ΔS = q̄·K_sᵀ per 128-query block, from Python)
//   m   = running row max; P̃ = exp(S - m); l = running Σ P̃ (unquantized, fp32)
//   s_P1 = rowmax_tile(P̃) / (448·6);  P̂ = φ(P̃ / s_P1)  (16-key blocks, E4M3 scales)
//   O   = O·exp(m_old - m) + (P̂·φ(V)) · s_P1
// The Python front end (sageattn3/_ops.py) smooths Q and K, computes ΔS, quantizes Q, K and Vᵀ
// (csrc/quant_nvfp4.cu), and adds sm_scale·q·mean(K) to the LSE afterwards.
//
// Tiling: a CTA of 4 warps owns 64 query rows (16 per warp, one m16 MMA row block); key tiles of
// 128 (as the reference's KV_BLOCK, which fixes where s_P1 is taken). Operands are read straight
// from global memory into MMA registers (no shared-memory staging yet: a first, simple increment).
//
// Key permutation (no shuffles between the two MMAs): in S = Q·Kᵀ the MMA's column n of n-tile j
// is fed key slot(j, n) = 8(n/2) + 2(j mod 4) + n mod 2 (+32 for j >= 4) of the 64-key chunk.
// Then the accumulator element a lane holds (row g, column 2t+e of n-tile j) is exactly the P
// element that the m16n8k64 A-operand layout wants in that lane (k = 8t + 2(j mod 4) + e, +32 for
// j >= 4), so P is quantized in registers where it was computed, and each 16-key scale block of P
// is 16 consecutive keys, as in the reference (the block max needs one shuffle with lane t^1).
//
// Inputs (uint8 codes/scales as produced by quant_nvfp4; Lq_pad % 64 == 0, Lk_pad % 128 == 0):
//   q_codes [B, Hq, Lq_pad, D/2], q_scales [B, Hq, Lq_pad, D/16]
//   k_codes [B, Hkv, Lk_pad, D/2], k_scales [B, Hkv, Lk_pad, D/16]
//   v_codes [B, Hkv, D, Lk_pad/2], v_scales [B, Hkv, D, Lk_pad/16]     (V transposed)
//   delta_s [B, Hq, nQ, Lk_pad] float32 (nQ = number of 128-query blocks, 1 without per-block mean)
// Outputs: out [B, Hq, Lq_pad, D] float32, lse [B, Hq, Lq_pad] float32 = m + ln(l) (no K-mean term).
//
// sm_120a/sm_121a use the hardware block-scaled FP4 MMA; every other target (sm_100a, sm_103a, and
// the sm_90 test build) the software MMA of fp4_mma.cuh. None of it has run on a Blackwell GPU.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "fp4_mma.cuh"
#include "nvfp4.cuh"

// Head dims compiled in (setup.py passes -DSAGEATTN3_HEAD_DIMS_64_128 or _128; default both).
#if !defined(SAGEATTN3_HD64) && !defined(SAGEATTN3_HD128)
#define SAGEATTN3_HD64 1
#define SAGEATTN3_HD128 1
#endif

namespace sageattn3 {
namespace detail {

constexpr int kWarps = 4;
constexpr int kRowsPerCta = 16 * kWarps;  // 64
constexpr int kKeysPerTile = 128;
constexpr int kQBlock = 128;              // query block of the per-block mean (reference Q_BLOCK)
constexpr float kTwoLevelDiv = 448.0f * 6.0f;

struct AttnParams {
  const uint8_t* q_codes;
  const uint8_t* q_scales;
  const uint8_t* k_codes;
  const uint8_t* k_scales;
  const uint8_t* v_codes;
  const uint8_t* v_scales;
  const float* delta_s;
  float* out;
  float* lse;
  int heads;       // Hq
  int groups;      // Hq / Hkv
  int lq_pad;
  int lk_pad;
  int kv_len;      // real number of keys
  int num_qblocks; // nQ of delta_s
  float sm_scale;
  bool causal;
  bool per_block_mean;
};

__device__ __forceinline__ uint32_t load_u32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Key (within a 64-key chunk) fed to column n of n-tile j of the S MMA; see the file comment.
__device__ __forceinline__ int key_slot(int j, int n) {
  return (j < 4 ? 0 : 32) + 8 * (n >> 1) + 2 * (j & 3) + (n & 1);
}

template <int D>
__global__ void __launch_bounds__(kWarps * 32) SageAttn3FwdKernel(const AttnParams p) {
  constexpr int kChunksD = D / 64;  // 64-wide k chunks of Q·Kᵀ
  constexpr int kTilesD = D / 8;    // n tiles of P·V
  constexpr int kCodeRow = D / 2;   // bytes per token row of codes
  constexpr int kScaleRow = D / 16; // bytes per token row of scales
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int m_block = blockIdx.x;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int hkv = h / p.groups;
  const int heads_kv = p.heads / p.groups;
  const int row0 = m_block * kRowsPerCta + warp * 16;

  const int64_t q_head = static_cast<int64_t>(b) * p.heads + h;
  const int64_t kv_head = static_cast<int64_t>(b) * heads_kv + hkv;

  // Q fragments and scales, kept in registers for the whole key loop.
  uint32_t qa[kChunksD][4];
  uint32_t qsf[kChunksD];
  {
    const uint8_t* qc = p.q_codes + (q_head * p.lq_pad + row0) * kCodeRow;
    const uint8_t* qs = p.q_scales + (q_head * p.lq_pad + row0) * kScaleRow;
#pragma unroll
    for (int dc = 0; dc < kChunksD; ++dc) {
      qa[dc][0] = load_u32(qc + g * kCodeRow + dc * 32 + 4 * t);
      qa[dc][1] = load_u32(qc + (g + 8) * kCodeRow + dc * 32 + 4 * t);
      qa[dc][2] = load_u32(qc + g * kCodeRow + dc * 32 + 16 + 4 * t);
      qa[dc][3] = load_u32(qc + (g + 8) * kCodeRow + dc * 32 + 16 + 4 * t);
      qsf[dc] = load_u32(qs + ((t & 1) ? g + 8 : g) * kScaleRow + dc * 4);  // lanes 4g / 4g+1
    }
  }

  const int qblock = p.per_block_mean ? min((m_block * kRowsPerCta) / kQBlock, p.num_qblocks - 1) : 0;
  const float* ds = p.delta_s + (q_head * p.num_qblocks + qblock) * p.lk_pad;
  const uint8_t* kc = p.k_codes + kv_head * p.lk_pad * kCodeRow;
  const uint8_t* ks = p.k_scales + kv_head * p.lk_pad * kScaleRow;
  const uint8_t* vc = p.v_codes + kv_head * D * (p.lk_pad / 2);
  const uint8_t* vs = p.v_scales + kv_head * D * (p.lk_pad / 16);

  float o[kTilesD][4];
#pragma unroll
  for (int dn = 0; dn < kTilesD; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.0f, 0.0f};  // this lane's partial row sums (reduced over the quad at the end)

  int num_tiles = (p.kv_len + kKeysPerTile - 1) / kKeysPerTile;
  if (p.causal) {  // tiles wholly right of the CTA's last row add nothing (P = 0, alpha = 1)
    num_tiles = min(num_tiles, (m_block * kRowsPerCta + kRowsPerCta - 1) / kKeysPerTile + 1);
  }

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int key0 = tile * kKeysPerTile;
    float s[2][8][4];
#pragma unroll
    for (int c = 0; c < 2; ++c)
#pragma unroll
      for (int j = 0; j < 8; ++j) s[c][j][0] = s[c][j][1] = s[c][j][2] = s[c][j][3] = 0.0f;

    // S = Q·Kᵀ with the permuted key order.
#pragma unroll
    for (int c = 0; c < 2; ++c) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int key = key0 + 64 * c + key_slot(j, g);
        const uint8_t* krow = kc + static_cast<int64_t>(key) * kCodeRow;
#pragma unroll
        for (int dc = 0; dc < kChunksD; ++dc) {
          const uint32_t b0 = load_u32(krow + dc * 32 + 4 * t);
          const uint32_t b1 = load_u32(krow + dc * 32 + 16 + 4 * t);
          const uint32_t sfb = load_u32(ks + static_cast<int64_t>(key) * kScaleRow + dc * 4);
          fp4_mma(s[c][j], qa[dc], b0, b1, qsf[dc], sfb);
        }
      }
    }

    // ΔS, softmax scale, masks; tile row max.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int c = 0; c < 2; ++c) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1;
          const int key = key0 + 64 * c + key_slot(j, 2 * t + (e & 1));
          const int row = row0 + g + 8 * r;
          float v = __fmul_rn(__fadd_rn(s[c][j][e], ds[key]), p.sm_scale);
          if (key >= p.kv_len || (p.causal && key > row)) v = -INFINITY;
          s[c][j][e] = v;
          tile_max[r] = fmaxf(tile_max[r], v);
        }
      }
    }
    float m_safe[2], alpha[2], s_p1[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 2));
      const float m_new = fmaxf(m_run[r], tile_max[r]);
      m_safe[r] = isinf(m_new) ? 0.0f : m_new;  // a row with no key yet keeps -inf; exp() gives 0
      alpha[r] = expf(m_run[r] - m_safe[r]);
      // rowmax(P̃) of this tile = exp(tile max - m), the same exp as the element that holds it.
      s_p1[r] = __fdiv_rn(expf(tile_max[r] - m_safe[r]), kTwoLevelDiv);
      m_run[r] = m_new;
      l_run[r] = __fmul_rn(l_run[r], alpha[r]);  // l = l_old·alpha + Σ P̃ (the sum is added below)
    }

    // P̃ = exp(S - m), row sums, and two-level NVFP4 quantization into A-operand registers.
    uint32_t pa[2][4];
    uint32_t psf[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      uint32_t scale_word[2] = {0u, 0u};  // per row: this lane's two scale bytes in MMA byte order
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float v[8];
          float amax = 0.0f;
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float pv = expf(s[c][4 * half + jj][2 * r + e] - m_safe[r]);
              l_run[r] += pv;
              const float p2 = s_p1[r] > 0.0f ? __fdiv_rn(pv, s_p1[r]) : pv;
              v[2 * jj + e] = p2;
              amax = fmaxf(amax, p2);
            }
          }
          amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, 1));  // lane t^1 holds the other 8 keys
          float recip;
          const uint32_t scale = nvfp4::block_scale(amax, &recip);
          pa[c][2 * half + r] = nvfp4::pack8(v, recip);
          scale_word[r] |= scale << (8 * (2 * half + (t >> 1)));
        }
      }
      // sfa: lane 4g needs row g's four scale bytes, lane 4g+1 row g+8's; t and t^2 hold halves.
      const uint32_t mine = (t & 1) ? scale_word[1] : scale_word[0];
      psf[c] = mine | __shfl_xor_sync(kFullMask, mine, 2);
    }

    // O_tile = P̂·φ(V), then O = O·alpha + O_tile·s_P1.
#pragma unroll
    for (int dn = 0; dn < kTilesD; ++dn) {
      float ot[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const int d = dn * 8 + g;
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int kbase = key0 + 64 * c;
        const uint8_t* vrow = vc + static_cast<int64_t>(d) * (p.lk_pad / 2) + kbase / 2;
        const uint32_t b0 = load_u32(vrow + 4 * t);
        const uint32_t b1 = load_u32(vrow + 16 + 4 * t);
        const uint32_t sfb = load_u32(vs + static_cast<int64_t>(d) * (p.lk_pad / 16) + kbase / 16);
        fp4_mma(ot, pa[c], b0, b1, psf[c], sfb);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        o[dn][e] = __fadd_rn(__fmul_rn(o[dn][e], alpha[r]), __fmul_rn(ot[e], s_p1[r]));
      }
    }
  }

  // Epilogue: full row sums over the quad, O / l, LSE = m + ln(l).
  float* out = p.out + (q_head * p.lq_pad + row0) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(kFullMask, l, 1);
    l += __shfl_xor_sync(kFullMask, l, 2);
    const float inv = l > 0.0f ? __fdiv_rn(1.0f, l) : 0.0f;
    const int row = g + 8 * r;
#pragma unroll
    for (int dn = 0; dn < kTilesD; ++dn) {
      float2 pair;
      pair.x = __fmul_rn(o[dn][2 * r], inv);
      pair.y = __fmul_rn(o[dn][2 * r + 1], inv);
      *reinterpret_cast<float2*>(out + row * D + dn * 8 + 2 * t) = pair;
    }
    if (t == 0) {
      p.lse[q_head * p.lq_pad + row0 + row] = l > 0.0f ? m_run[r] + logf(l) : -INFINITY;
    }
  }
}

template <int D>
void launch(const AttnParams& params, int batch, cudaStream_t stream) {
  const dim3 grid(params.lq_pad / kRowsPerCta, params.heads, batch);
  SageAttn3FwdKernel<D><<<grid, kWarps * 32, 0, stream>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_u8(const at::Tensor& x, const char* name, std::initializer_list<int64_t> shape) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kByte && x.is_contiguous(), "sageattn3 attn_fwd: ", name,
              " must be a contiguous uint8 CUDA tensor");
  TORCH_CHECK(x.sizes().vec() == std::vector<int64_t>(shape), "sageattn3 attn_fwd: ", name, " has shape ",
              x.sizes(), ", expected ", at::IntArrayRef(shape));
}

}  // namespace detail

// Schema in csrc/torch_bindings.cpp.
void attn_fwd(const at::Tensor& q_codes, const at::Tensor& q_scales, const at::Tensor& k_codes,
              const at::Tensor& k_scales, const at::Tensor& v_codes, const at::Tensor& v_scales,
              const at::Tensor& delta_s, at::Tensor& out, at::Tensor& lse, int64_t kv_len, double sm_scale,
              bool is_causal, bool per_block_mean) {
  TORCH_CHECK(q_codes.dim() == 4 && k_codes.dim() == 4, "sageattn3 attn_fwd: q_codes and k_codes must be 4-D");
  const int64_t batch = q_codes.size(0), heads = q_codes.size(1), lq_pad = q_codes.size(2);
  const int64_t d = q_codes.size(3) * 2;
  const int64_t heads_kv = k_codes.size(1), lk_pad = k_codes.size(2);
  TORCH_CHECK(heads_kv > 0 && heads % heads_kv == 0, "sageattn3 attn_fwd: q heads (", heads,
              ") must be a multiple of k heads (", heads_kv, ")");
  TORCH_CHECK(lq_pad % detail::kRowsPerCta == 0 && lk_pad % detail::kKeysPerTile == 0,
              "sageattn3 attn_fwd: padded lengths must be multiples of 64 (q) and 128 (k), got ", lq_pad, ", ", lk_pad);
  TORCH_CHECK(kv_len >= 1 && kv_len <= lk_pad, "sageattn3 attn_fwd: kv_len ", kv_len, " outside [1, ", lk_pad, "]");
  detail::check_u8(q_codes, "q_codes", {batch, heads, lq_pad, d / 2});
  detail::check_u8(q_scales, "q_scales", {batch, heads, lq_pad, d / 16});
  detail::check_u8(k_codes, "k_codes", {batch, heads_kv, lk_pad, d / 2});
  detail::check_u8(k_scales, "k_scales", {batch, heads_kv, lk_pad, d / 16});
  detail::check_u8(v_codes, "v_codes", {batch, heads_kv, d, lk_pad / 2});
  detail::check_u8(v_scales, "v_scales", {batch, heads_kv, d, lk_pad / 16});
  TORCH_CHECK(delta_s.is_cuda() && delta_s.scalar_type() == at::kFloat && delta_s.is_contiguous() &&
                  delta_s.dim() == 4 && delta_s.size(0) == batch && delta_s.size(1) == heads &&
                  delta_s.size(2) >= 1 && delta_s.size(3) == lk_pad,
              "sageattn3 attn_fwd: delta_s must be contiguous float32 [B, Hq, nQ, Lk_pad], got ", delta_s.sizes());
  TORCH_CHECK(out.is_cuda() && out.scalar_type() == at::kFloat && out.is_contiguous() &&
                  out.sizes() == at::IntArrayRef({batch, heads, lq_pad, d}),
              "sageattn3 attn_fwd: out must be contiguous float32 [B, Hq, Lq_pad, D]");
  TORCH_CHECK(lse.is_cuda() && lse.scalar_type() == at::kFloat && lse.is_contiguous() &&
                  lse.sizes() == at::IntArrayRef({batch, heads, lq_pad}),
              "sageattn3 attn_fwd: lse must be contiguous float32 [B, Hq, Lq_pad]");
  TORCH_CHECK(heads <= 65535 && batch <= 65535, "sageattn3 attn_fwd: at most 65535 heads and batches");
  TORCH_CHECK(lk_pad < (1LL << 30) && lq_pad < (1LL << 30), "sageattn3 attn_fwd: sequence too long");

  detail::AttnParams params;
  params.q_codes = q_codes.data_ptr<uint8_t>();
  params.q_scales = q_scales.data_ptr<uint8_t>();
  params.k_codes = k_codes.data_ptr<uint8_t>();
  params.k_scales = k_scales.data_ptr<uint8_t>();
  params.v_codes = v_codes.data_ptr<uint8_t>();
  params.v_scales = v_scales.data_ptr<uint8_t>();
  params.delta_s = delta_s.data_ptr<float>();
  params.out = out.data_ptr<float>();
  params.lse = lse.data_ptr<float>();
  params.heads = static_cast<int>(heads);
  params.groups = static_cast<int>(heads / heads_kv);
  params.lq_pad = static_cast<int>(lq_pad);
  params.lk_pad = static_cast<int>(lk_pad);
  params.kv_len = static_cast<int>(kv_len);
  params.num_qblocks = static_cast<int>(delta_s.size(2));
  params.sm_scale = static_cast<float>(sm_scale);
  params.causal = is_causal;
  params.per_block_mean = per_block_mean;

  const c10::cuda::CUDAGuard device_guard(q_codes.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  switch (d) {
#ifdef SAGEATTN3_HD64
    case 64:
      detail::launch<64>(params, static_cast<int>(batch), stream);
      return;
#endif
#ifdef SAGEATTN3_HD128
    case 128:
      detail::launch<128>(params, static_cast<int>(batch), stream);
      return;
#endif
    default:
      TORCH_CHECK(false, "sageattn3 attn_fwd: head_dim ", d, " is not compiled into this build (",
                  "see sageattn3._build_info.HEAD_DIMS)");
  }
}

}  // namespace sageattn3

TORCH_LIBRARY_IMPL(sageattn3, CUDA, m) { m.impl("attn_fwd", &sageattn3::attn_fwd); }
