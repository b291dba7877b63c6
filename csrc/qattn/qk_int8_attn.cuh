// Attention with INT8 Q·Kᵀ (mma.sync m16n8k32 s8) and a 16-bit or FP8 P·V, for sm80 and sm89+.
//
// Algorithm (research notes §2.1-2.4; SageAttention2 Algorithm 1): FlashAttention-2 tiling with an
// online softmax in FP32 and exp2. Per CTA 8 warps of 32 query rows (hd128) or 16 (hd64), see
// m_tiles below; the KV loop walks kCtaK = 64 keys per step with K/V double-buffered in shared
// memory by cp.async.
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

// Query rows per warp. With 16 (one m16 tile) every K and V fragment a warp reads from shared
// memory feeds one MMA: per 64-key block and warp (hd128 f16 P·V) 52 ldmatrix.x4 for 96 MMAs, and
// each MMA waits on its own load. Session 3's Nsight Compute profile of that layout: latency-bound
// (two warps per scheduler, half a warp eligible), tensor pipe 27 % busy, L1/shared 42 %. With 32
// rows (two m16 tiles) each fragment feeds two independent MMAs: 56 loads for 192 MMAs and twice
// the work between a load and its use, for 64 more registers (O and S of the second tile).
// Profile of this layout (session 7, same shape): tensor pipe 41.5 %, the second stall reason now
// the math pipe's throttle (benchmarks/results/h100-2026-11-23-session7/run5_ncu_*.txt).
// Measured on the H100 (sm80/sm89 sources via the PTX JIT, kernel only, 16K, session 7):
//   hd128: f16 P·V 314 -> 398 TOPS, e4m3 P·V 315 -> 340 (4K and causal alike): 32 rows;
//   hd64:  f16 P·V 319 -> 282, e4m3 285 -> 299 (for f16, two 16-row CTAs per SM beat one
//          32-row CTA; e4m3 within the spread): 16 rows.
// The hd128 builds then use all 255 registers and spill stores of 4-42 B (ptxas 13.0; loop-
// invariant values reloaded from L1 a few times per KV block; tests/test_qattn_compile_archs.py
// bounds them).
// The CTA keeps 8 warps, so it holds 128 or 256 query rows. The Q-scale layout stays per 128-row
// block of eight 16-row slabs (the quantizers do not change): a warp's m-tile reads its slab.
// (Session 6's S-ahead schedule, S of block j + 1 issued before the softmax of block j, measured
// 350 TOPS for hd128 f16 and lost on e4m3 and hd64; it needs 64 more registers with two m-tiles.)
// SAGEATTN_QATTN_WARP_ROWS=16 or 32 (NVCC_APPEND_FLAGS=-DSAGEATTN_QATTN_WARP_ROWS=...) forces one
// layout for every head dim, for measurements.
#ifndef SAGEATTN_QATTN_WARP_ROWS
#define SAGEATTN_QATTN_WARP_ROWS 0
#endif
static_assert(SAGEATTN_QATTN_WARP_ROWS == 0 || SAGEATTN_QATTN_WARP_ROWS == 16 || SAGEATTN_QATTN_WARP_ROWS == 32,
              "SAGEATTN_QATTN_WARP_ROWS: 16 or 32 (0: by head dim)");

// m16 tiles per warp, and query rows per CTA, for head dim D.
template <int D>
__host__ __device__ constexpr int m_tiles() {
  return SAGEATTN_QATTN_WARP_ROWS != 0 ? SAGEATTN_QATTN_WARP_ROWS / 16 : (D >= 128 ? 2 : 1);
}
template <int D>
__host__ __device__ constexpr int cta_rows() {
  return kWarps * 16 * m_tiles<D>();
}

template <int D, PvMode M>
struct Smem {
  static constexpr int kQPitch = D + kPad;                          // int8 Q row
  static constexpr int kKPitch = D + kPad;                          // int8 K row
  static constexpr int kVPitch = is_fp8(M) ? kCtaK + kPad : 2 * D + kPad;  // e4m3 Vᵀ row / f16 V row
  static constexpr int kVRows = is_fp8(M) ? D : kCtaK;
  static constexpr int kQBytes = cta_rows<D>() * kQPitch;
  static constexpr int kKBytes = kCtaK * kKPitch;
  static constexpr int kVBytes = kVRows * kVPitch;
  static constexpr int kStageBytes = kKBytes + kVBytes;  // stage s: K at kQBytes + s * kStageBytes, then V
  static constexpr int kTotal = kQBytes + 2 * kStageBytes;  // K/V double-buffered
};

// CTAs per SM the kernel is compiled for (__launch_bounds__): two for hd64 with 16-row warps,
// where two CTAs' shared memory fits the SM (1 KB of each is reserved by the system): 16 warps
// per SM at 128 registers (~125-165 unbounded; the unbounded build of an earlier kernel settled
// at 128 by itself). Otherwise one CTA of 8 warps with up to 255 registers each: hd128 needs them
// (16-row warps kept ~10 V ldmatrix in flight ahead of the P·V MMAs with ~170-230).
// Shared memory of one SM (CUDA guide's per-arch table); the host pass only needs some value.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 860 || __CUDA_ARCH__ == 890 || __CUDA_ARCH__ >= 1200)
constexpr int kSmemPerSm = 100 * 1024;
#else
constexpr int kSmemPerSm = 164 * 1024;  // sm80/sm87 (sm90/sm100: 228 KB, at least as much)
#endif

template <int D, PvMode M>
constexpr int min_ctas_per_sm() {
  const bool fits = 2 * (Smem<D, M>::kTotal + 1024) <= kSmemPerSm;
  return fits && D == 64 && m_tiles<D>() == 1 ? 2 : 1;
}

// online_softmax (qk_int8_attn_common.cuh) for s = x · dq, where `s` comes in as x, the
// unscaled S (dequantize_and_mask with dq = 1): each lane takes its max over x and scales it by
// its own dq (dq > 0 keeps the order and rounding is monotonic, so m is the same float; the
// scale must come before the quad reduction because per-thread K scales differ between the
// quad's lanes), and dq enters the exponent as one
// FFMA, P = 2^(x · dq - (m - p_shift)), instead of an FMUL per element before the max: 32 FMUL
// fewer per KV block and warp, and none between the S MMAs and the max. P differs from
// 2^(round(x · dq) - (m - p_shift)) by at most one rounding of the exponent's argument.
template <int kNT>
__device__ __forceinline__ void online_softmax_scaled(float (&s)[kNT][4], float dq, float (&m_row)[2],
                                                      float (&l_row)[2], float (&alpha)[2], float p_shift) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int t = 0; t < kNT; ++t) mx = fmaxf(mx, fmaxf(s[t][2 * r], s[t][2 * r + 1]));
    // Scale before the quad reduction: per-thread K scales differ between the quad's lanes
    // (H100 run, session 4: quad_max(x) * dq broke every per_thread case). -inf · dq = -inf.
    mx = fmaxf(m_row[r], quad_max(mx * dq));
    // A row that has seen only masked keys keeps m = -inf; subtract 0 then so P = 0, not NaN.
    const float m_use = mx == -INFINITY ? 0.0f : mx;
    alpha[r] = ptx::fast_exp2(m_row[r] - m_use);
    m_row[r] = mx;
    const float neg_base = p_shift - m_use;
    float sum = 0.0f;
#pragma unroll
    for (int t = 0; t < kNT; ++t) {
      s[t][2 * r] = ptx::fast_exp2(fmaf(s[t][2 * r], dq, neg_base));
      s[t][2 * r + 1] = ptx::fast_exp2(fmaf(s[t][2 * r + 1], dq, neg_base));
      sum += s[t][2 * r] + s[t][2 * r + 1];
    }
    l_row[r] = l_row[r] * alpha[r] + sum;
  }
}

// O += an f16-accumulated MMA result (the per-block buffer of "fp16+fp32" and "fp32+fp16"):
// registers 0/1 hold rows group / group + 8, two channels each.
__device__ __forceinline__ void add_f16_buffer(float (&o)[4], const uint32_t (&buf)[2]) {
  const float2 top = ptx::unpack_half2(buf[0]), bottom = ptx::unpack_half2(buf[1]);
  o[0] += top.x;
  o[1] += top.y;
  o[2] += bottom.x;
  o[3] += bottom.y;
}

template <int D, PvMode M>
__global__ void __launch_bounds__(kThreads, min_ctas_per_sm<D, M>()) QkInt8AttnKernel(const AttnParams p) {
  using S = Smem<D, M>;
  constexpr int kMTiles = m_tiles<D>();
  constexpr int kCtaRows = cta_rows<D>();
  constexpr bool kFp8 = is_fp8(M);
  constexpr int kNT = kCtaK / 8;  // S n-tiles per warp
  constexpr int kDT = D / 8;      // O n-tiles per warp
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* q_smem = smem;
  uint8_t* kv_smem = smem + S::kQBytes;

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
  const int q0 = q_block * kCtaRows;

  const int8_t* q_base = p.q + batch * p.q_stride[0] + head * p.q_stride[1];
  const int8_t* k_base = p.k + batch * p.k_stride[0] + kv_head * p.k_stride[1];
  const uint8_t* v_base = static_cast<const uint8_t*>(p.v) +
                          (batch * p.v_stride[0] + kv_head * p.v_stride[1]) * (kFp8 ? 1 : 2);

  const int num_kv_blocks = num_kv_blocks_for<kCtaRows>(p, q0);

  // ---- async K/V tile loads (16-byte chunks; rows past L_k are zero-filled) ----
  // A thread copies the same column of rows row0, row0 + kRowStep, ... of each tile in every
  // block: its source pointers and shared addresses are set up once here, a block adds kv0 rows
  // and a chunk adds a multiple of the (uniform) row step. The generic form, `for (c = tid; c <
  // n; c += kThreads)` with `(kv0 + row) * stride` per chunk, cost ~400 SASS instructions and
  // 22 branches per KV block (hd128 f16: 40 % of the loop body) for 6 LDGSTS.
  constexpr int kKChunksPerRow = D / 16;
  constexpr int kKRowStep = kThreads / kKChunksPerRow;
  constexpr int kKPerThread = kCtaK / kKRowStep;
  static_assert(kThreads % kKChunksPerRow == 0 && kCtaK % kKRowStep == 0, "K tile split");
  const int k_row0 = tid / kKChunksPerRow;
  const int8_t* k_src0 = k_base + k_row0 * p.k_stride[2] + (tid % kKChunksPerRow) * 16;
  const int64_t k_src_step = kKRowStep * p.k_stride[2];
  const uint32_t k_dst0 = ptx::smem_addr(kv_smem + k_row0 * S::kKPitch + (tid % kKChunksPerRow) * 16);

  // f16 V: rows are tokens. e4m3 Vᵀ: rows are channels and every 64-key block lies inside the
  // zero-padded L_pad, so a block moves 64 bytes to the right instead of 64 rows down.
  constexpr int kVChunksPerRow = (kFp8 ? kCtaK : 2 * D) / 16;
  constexpr int kVRowStep = kThreads / kVChunksPerRow;
  constexpr int kVPerThread = S::kVRows / kVRowStep;
  static_assert(kThreads % kVChunksPerRow == 0 && S::kVRows % kVRowStep == 0, "V tile split");
  const int v_row0 = tid / kVChunksPerRow;
  const int64_t v_row_bytes = kFp8 ? p.v_stride[2] : 2 * p.v_stride[2];
  const uint8_t* v_src0 = v_base + v_row0 * v_row_bytes + (tid % kVChunksPerRow) * 16;
  const int64_t v_src_step = kVRowStep * v_row_bytes;
  const uint32_t v_dst0 = ptx::smem_addr(kv_smem + S::kKBytes + v_row0 * S::kVPitch + (tid % kVChunksPerRow) * 16);

  auto load_kv = [&](int block, int stage) {
    const int kv0 = block * kCtaK;
    const int rows_left = p.lk - kv0;  // tile rows at or past this are keys past L_k
    const uint32_t stage_off = stage * S::kStageBytes;
    const int8_t* k_src = k_src0 + kv0 * p.k_stride[2];
#pragma unroll
    for (int i = 0; i < kKPerThread; ++i) {
      // A zero-filled chunk reads nothing, but its address stays inside the tensor.
      const bool ok = k_row0 + i * kKRowStep < rows_left;
      ptx::cp_async_16(k_dst0 + stage_off + i * kKRowStep * S::kKPitch, ok ? k_src : k_base, ok);
      k_src += k_src_step;
    }
    const uint8_t* v_src = v_src0 + (kFp8 ? int64_t{kv0} : kv0 * v_row_bytes);
#pragma unroll
    for (int i = 0; i < kVPerThread; ++i) {
      const bool ok = kFp8 || v_row0 + i * kVRowStep < rows_left;
      ptx::cp_async_16(v_dst0 + stage_off + i * kVRowStep * S::kVPitch, ok ? v_src : v_base, ok);
      v_src += v_src_step;
    }
  };

  load_q_tile<D, S::kQPitch, kThreads, kCtaRows>(q_smem, q_base, p, q0, tid);
  if (num_kv_blocks > 0) load_kv(0, 0);
  ptx::cp_async_commit();

  // ---- per-thread state ----
  const int warp_row0 = q0 + warp * 16 * kMTiles;  // m-tile mt: rows warp_row0 + 16 mt ..
  // Q scales per 16-row slab (slab index over the head, hence q_block 0 below). The scale tensor
  // ends with L_q's last 128-row block, which a 256-row CTA can overrun: such slabs hold no rows.
  float q_scale[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int slab = warp_row0 / 16 + mt;
    q_scale[mt] = slab * 16 < p.lq ? lane_q_scale(p, batch, head, 0, slab, group) : 0.0f;
  }
  const float* k_scale_ptr = p.k_scale + batch * p.ks_stride[0] + kv_head * p.ks_stride[1] +
                             (p.k_groups == 1 ? 0 : tig);
  const float p_shift = kFp8 ? kFp8PLog2Scale : 0.0f;
  // Block j + 1's K scale is fetched while block j computes. (Read at its use, as before, the
  // LDG went out after the barrier, mid-way through the S MMAs, and the first FMUL waited on it.)
  float k_scale_next = num_kv_blocks > 0 ? __ldg(k_scale_ptr) : 0.0f;

  float m_row[kMTiles][2], l_row[kMTiles][2];  // l: this lane's partial row sums; quad-reduced at the end
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    m_row[mt][0] = m_row[mt][1] = -INFINITY;
    l_row[mt][0] = l_row[mt][1] = 0.0f;
  }
  constexpr bool kO16 = M == PvMode::kF16Acc16;
  // Modes that add a per-block MMA result to O on CUDA cores instead of accumulating into it.
  constexpr bool kBufferedO = M == PvMode::kF16Acc16Buf || M == PvMode::kF8Acc32Buf || M == PvMode::kF8Acc16Buf;
  float o_acc[kMTiles][kO16 ? 1 : kDT][4];
  uint32_t o_h[kMTiles][kO16 ? kDT : 1][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    if constexpr (kO16) {
#pragma unroll
      for (int t = 0; t < kDT; ++t) o_h[mt][t][0] = o_h[mt][t][1] = 0u;
    } else {
#pragma unroll
      for (int t = 0; t < kDT; ++t) o_acc[mt][t][0] = o_acc[mt][t][1] = o_acc[mt][t][2] = o_acc[mt][t][3] = 0.0f;
    }
  }

  // ldmatrix row addresses of this lane (stage 0; a stage adds kStageBytes). x4 loads: lanes
  // 8 i .. 8 i + 7 address matrix i (mma.cuh).
  const uint32_t q_lane =
      ptx::smem_addr(q_smem + (warp * 16 * kMTiles + (lane & 7) + ((lane >> 3) & 1) * 8) * S::kQPitch + (lane >> 4) * 16);
  const uint32_t k_lane =
      ptx::smem_addr(kv_smem + ((lane & 7) + (lane >> 4) * 8) * S::kKPitch + ((lane >> 3) & 1) * 16);
  // f16 V (trans): matrices 0/1 keys +0/+8 of channels +0, 2/3 the same of channels +8.
  // e4m3 Vᵀ: matrices 0/1 keys +0/+16 of channels +0, 2/3 the same of channels +8.
  const uint32_t v_lane =
      kFp8 ? ptx::smem_addr(kv_smem + S::kKBytes + ((lane & 7) + (lane >> 4) * 8) * S::kVPitch +
                            ((lane >> 3) & 1) * 16)
           : ptx::smem_addr(kv_smem + S::kKBytes + ((lane & 7) + ((lane >> 3) & 1) * 8) * S::kVPitch +
                            (lane >> 4) * 16);

  // S = Q Kᵀ (int32) of the K tile at stage_off.
  auto compute_s = [&](int32_t (&s_int)[kMTiles][kNT][4], uint32_t stage_off) {
    // Q's A fragments are re-read from shared memory per k-step (4 LDSM per m-tile and block)
    // rather than held across the loop (16 registers per m-tile): the hd128 builds have none
    // left, and the two-CTA hd64 build must fit in 128.
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int t = 0; t < kNT; ++t) s_int[mt][t][0] = s_int[mt][t][1] = s_int[mt][t][2] = s_int[mt][t][3] = 0;
#pragma unroll
    for (int kk = 0; kk < D / 32; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) ptx::ldmatrix_x4(a[mt], q_lane + mt * 16 * S::kQPitch + kk * 32);
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t b[4];
        ptx::ldmatrix_x4(b, k_lane + stage_off + np * 16 * S::kKPitch + kk * 32);
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          ptx::mma_s8_m16n8k32(s_int[mt][2 * np], a[mt], b[0], b[1]);
          ptx::mma_s8_m16n8k32(s_int[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }
  };

  // Mask, online softmax (dq goes into the exponent; the · 1.0f folds away), O rescale and
  // O += P V for the block of keys kv0 .. kv0 + 63 whose S is s_int and whose V tile is at
  // stage_off. With two m-tiles every V fragment feeds both tiles' MMAs.
  auto softmax_pv = [&](const int32_t (&s_int)[kMTiles][kNT][4], const float (&dq)[kMTiles], int kv0,
                        uint32_t stage_off) {
    float s[kMTiles][kNT][4];
    float alpha[kMTiles][2];
    bool any_moved = false;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      dequantize_and_mask<kNT>(s[mt], &s_int[mt][0][0], 1.0f, p, kv0, warp_row0 + 16 * mt, group, tig);
      online_softmax_scaled<kNT>(s[mt], dq[mt], m_row[mt], l_row[mt], alpha[mt], p_shift);
      any_moved = any_moved || alpha[mt][0] != 1.0f || alpha[mt][1] != 1.0f;
    }
    if constexpr (kBufferedO) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) rescale_rows<kDT>(o_acc[mt], alpha[mt]);  // fused with the buffer add below
    } else if (__any_sync(0xffffffffu, any_moved)) {
      // Where the MMAs accumulate into O itself, O ·= alpha is skipped when no row of the warp
      // raised its max (alpha exactly 1, so skipping changes no bit): most blocks of a long
      // sequence once the maxima settle, 64 FMUL (hd128) per block, m-tile and warp each time.
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        if constexpr (kO16) {
          const __half2 a0 = __float2half2_rn(alpha[mt][0]), a1 = __float2half2_rn(alpha[mt][1]);
#pragma unroll
          for (int t = 0; t < kDT; ++t) {
            *reinterpret_cast<__half2*>(&o_h[mt][t][0]) = __hmul2(*reinterpret_cast<__half2*>(&o_h[mt][t][0]), a0);
            *reinterpret_cast<__half2*>(&o_h[mt][t][1]) = __hmul2(*reinterpret_cast<__half2*>(&o_h[mt][t][1]), a1);
          }
        } else {
          rescale_rows<kDT>(o_acc[mt], alpha[mt]);
        }
      }
    }

    // ---- O += P V ----
    if constexpr (!kFp8) {
      // P as the A operand of m16n8k16: k-step kk covers S n-tiles 2 kk and 2 kk + 1.
      uint32_t pa[kMTiles][kNT / 2][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int kk = 0; kk < kNT / 2; ++kk) {
          pa[mt][kk][0] = ptx::pack_half2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][kk][1] = ptx::pack_half2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][kk][2] = ptx::pack_half2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][kk][3] = ptx::pack_half2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t buf[kMTiles][2][2];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) buf[mt][0][0] = buf[mt][0][1] = buf[mt][1][0] = buf[mt][1][1] = 0u;
#pragma unroll
        for (int kk = 0; kk < kNT / 2; ++kk) {
          uint32_t b[4];
          ptx::ldmatrix_x4_trans(b, v_lane + stage_off + kk * 16 * S::kVPitch + dp * 32);
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            if constexpr (M == PvMode::kF16Acc32) {
              ptx::mma_f16_f32_m16n8k16(o_acc[mt][2 * dp], pa[mt][kk], b[0], b[1]);
              ptx::mma_f16_f32_m16n8k16(o_acc[mt][2 * dp + 1], pa[mt][kk], b[2], b[3]);
            } else if constexpr (M == PvMode::kF16Acc16Buf) {
              ptx::mma_f16_f16_m16n8k16(buf[mt][0], pa[mt][kk], b[0], b[1]);
              ptx::mma_f16_f16_m16n8k16(buf[mt][1], pa[mt][kk], b[2], b[3]);
            } else {
              ptx::mma_f16_f16_m16n8k16(o_h[mt][2 * dp], pa[mt][kk], b[0], b[1]);
              ptx::mma_f16_f16_m16n8k16(o_h[mt][2 * dp + 1], pa[mt][kk], b[2], b[3]);
            }
          }
        }
        if constexpr (M == PvMode::kF16Acc16Buf) {
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) add_f16_buffer(o_acc[mt][2 * dp + h], buf[mt][h]);
        }
      }
    } else {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 890
      // P·448 as e4m3, the A operand of m16n8k32: k-step kk covers S n-tiles 4 kk .. 4 kk + 3.
      uint32_t pa[kMTiles][kNT / 4][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) pack_p_e4m3<kNT>(pa[mt], s[mt]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        float buf32[kMTiles][2][4];
        uint32_t buf16[kMTiles][2][2];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            buf32[mt][h][0] = buf32[mt][h][1] = buf32[mt][h][2] = buf32[mt][h][3] = 0.0f;
            buf16[mt][h][0] = buf16[mt][h][1] = 0u;
          }
#pragma unroll
        for (int kk = 0; kk < kNT / 4; ++kk) {
          uint32_t b[4];
          ptx::ldmatrix_x4(b, v_lane + stage_off + dp * 16 * S::kVPitch + kk * 32);
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            if constexpr (M == PvMode::kF8Acc32) {
              ptx::mma_e4m3_f32_m16n8k32(o_acc[mt][2 * dp], pa[mt][kk], b[0], b[1]);
              ptx::mma_e4m3_f32_m16n8k32(o_acc[mt][2 * dp + 1], pa[mt][kk], b[2], b[3]);
            } else if constexpr (M == PvMode::kF8Acc32Buf) {
              ptx::mma_e4m3_f32_m16n8k32(buf32[mt][0], pa[mt][kk], b[0], b[1]);
              ptx::mma_e4m3_f32_m16n8k32(buf32[mt][1], pa[mt][kk], b[2], b[3]);
            } else {
              ptx::mma_e4m3_f16_m16n8k32(buf16[mt][0], pa[mt][kk], b[0], b[1]);
              ptx::mma_e4m3_f16_m16n8k32(buf16[mt][1], pa[mt][kk], b[2], b[3]);
            }
          }
        }
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            if constexpr (M == PvMode::kF8Acc32Buf) {
#pragma unroll
              for (int e = 0; e < 4; ++e) o_acc[mt][2 * dp + h][e] += buf32[mt][h][e];
            } else if constexpr (M == PvMode::kF8Acc16Buf) {
              add_f16_buffer(o_acc[mt][2 * dp + h], buf16[mt][h]);
            }
          }
      }
#else
      __trap();  // FP8 modes are only instantiated in sources compiled for sm_89+
#endif
    }
  };

  for (int block = 0; block < num_kv_blocks; ++block) {
    const int stage = block & 1;
    // dq > 0 for online_softmax_scaled; an all-zero Q or K group (scale 0) has x = 0, and
    // FLT_MIN keeps masked keys at -inf · dq = -inf instead of NaN.
    float dq[kMTiles];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) dq[mt] = fmaxf(q_scale[mt] * k_scale_next, 1.17549435e-38f);
    if (block + 1 < num_kv_blocks) {
      k_scale_next = __ldg(k_scale_ptr + (block + 1) * p.k_groups);
      load_kv(block + 1, stage ^ 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();
    int32_t s_int[kMTiles][kNT][4];
    compute_s(s_int, stage * S::kStageBytes);
    softmax_pv(s_int, dq, block * kCtaK, stage * S::kStageBytes);
    __syncthreads();  // the next iteration's loads overwrite this stage
  }
  ptx::cp_async_wait<0>();

  // ---- epilogue: O / l (· v_scale), LSE ----
  const float* vs_base = kFp8 ? p.v_scale + batch * p.vs_stride[0] + kv_head * p.vs_stride[1] : nullptr;
  uint8_t* o_base = static_cast<uint8_t*>(p.o) + (batch * p.o_stride[0] + head * p.o_stride[1]) * 2;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    float inv_l[2];
    finish_row_sums(l_row[mt], inv_l);
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
        const int row = warp_row0 + 16 * mt + group + r * 8;
        float x0, x1;
        if constexpr (kO16) {
          const float2 h = ptx::unpack_half2(o_h[mt][t][r]);
          x0 = h.x;
          x1 = h.y;
        } else {
          x0 = o_acc[mt][t][2 * r];
          x1 = o_acc[mt][t][2 * r + 1];
        }
        x0 *= inv_l[r] * v0;
        x1 *= inv_l[r] * v1;
        store_o_pair(p, o_base, row, ch, x0, x1);
      }
    }
    store_lse(p, batch, head, warp_row0 + 16 * mt, group, tig, m_row[mt], l_row[mt], p_shift);
  }
}

template <int D, PvMode M>
cudaError_t launch_qk_int8_attn(const AttnParams& params, int batch, int heads, cudaStream_t stream) {
  constexpr int kSmem = Smem<D, M>::kTotal;
  auto kernel = QkInt8AttnKernel<D, M>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (err != cudaSuccess) return err;
  if constexpr (min_ctas_per_sm<D, M>() > 1) {
    // All of L1 as shared memory, so the driver's carveout does not hold an SM to one CTA (the
    // kernel reads global memory through cp.async.cg, which bypasses L1, and a few scales).
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid((params.lq + cta_rows<D>() - 1) / cta_rows<D>(), heads, batch);
  kernel<<<grid, kThreads, kSmem, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace qattn
}  // namespace sageattention
