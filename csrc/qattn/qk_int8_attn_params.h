// Parameters and launch declaration of the INT8 Q·Kᵀ attention kernels (qk_int8_attn.cuh), for
// the host-side launchers: they include only this header, so the kernel template is compiled once
// per instantiation file (csrc/qattn/instantiations/), not again in every launcher.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sageattention {
namespace qattn {

enum class PvMode : int { kF16Acc32, kF16Acc16Buf, kF16Acc16, kF8Acc32, kF8Acc32Buf, kF8Acc16Buf };

__host__ __device__ constexpr bool is_fp8(PvMode m) {
  return m == PvMode::kF8Acc32 || m == PvMode::kF8Acc32Buf || m == PvMode::kF8Acc16Buf;
}

constexpr int kCtaQ = 128;
constexpr int kWarpQ = 16;
constexpr int kWarps = kCtaQ / kWarpQ;
constexpr int kThreads = kWarps * 32;
constexpr int kCtaK = 64;
constexpr int kPad = 16;  // bytes added to every shared-memory row
// log2(448): P·448 fills the e4m3 range (research notes §2.3.4); cancelled by l.
constexpr float kFp8PLog2Scale = 8.807354922057604f;

struct AttnParams {
  const int8_t* q;        // [B, H_q, L_q, D] via strides, int8
  const int8_t* k;        // [B, H_kv, L_k, D] via strides, int8
  const void* v;          // f16 [B, H_kv, L_k, D] via strides, or e4m3 [B, H_kv, D, L_pad]
  void* o;                // [B, H_q, L_q, D] via strides, f16 or bf16
  const float* q_scale;   // [B, H_q, ceil(L_q / 128) * 8 * q_groups]
  const float* k_scale;   // [B, H_kv, ceil(L_k / 64) * k_groups]
  const float* v_scale;   // [B, H_kv, D] (FP8 only)
  float* lse;             // [B, H_q, L_q] base-2 LSE, or nullptr
  int64_t q_stride[3], k_stride[3], v_stride[3], o_stride[3];  // batch, head, token (v fp8: channel)
  int64_t qs_stride[2], ks_stride[2], vs_stride[2], lse_stride[2];
  int lq, lk, kv_group;   // kv_group = H_q / H_kv
  int v_len;              // FP8 V operand: L_pad (tokens per channel row)
  int q_groups, k_groups; // 8/4 per-thread, 1/1 per-warp
  float qk_scale;
  bool causal, out_bf16;
};

// Launches QkInt8AttnKernel<D, M> on `stream` (grid ceil(L_q / rows per CTA) x heads x batch, 128 or
// 256 rows: cta_rows in qk_int8_attn.cuh; the scales stay per 128-row block); returns the
// first CUDA error (e.g. cudaErrorNoKernelImageForDevice when the build lacks this GPU's arch).
template <int D, PvMode M>
cudaError_t launch_qk_int8_attn(const AttnParams& params, int batch, int heads, cudaStream_t stream);

// Hopper (sm_90a) variant: the same AttnParams / scale / FP8 V operand contract as kF8Acc32Buf
// above (scales laid out for 128-row query blocks, 64-key blocks), computed with wgmma and TMA
// by a 384-thread CTA per 128 query rows (qk_int8_attn_sm90.cuh). Grid ceil(L_q / 128) x heads x
// batch. Needs v_len (the operand's L_pad) for V's tensor map.
// `variant`: a schedule variant of the kernel (qk_int8_attn_sm90.cuh), 0 unless the build has
// -DSAGEATTN_SM90_VARIANTS and the caller checked sm90_variant_in_build.
template <int D>
cudaError_t launch_qk_int8_attn_sm90(const AttnParams& params, int batch, int heads, int variant,
                                     cudaStream_t stream);

// The schedule variants this build holds: all of kSm90Variants with -DSAGEATTN_SM90_VARIANTS (an
// experiment build), else 0 alone.
constexpr int kSm90Variants[] = {0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 25};
inline bool sm90_variant_in_build(int variant) {
#ifdef SAGEATTN_SM90_VARIANTS
  for (int v : kSm90Variants)
    if (v == variant) return true;
  return false;
#else
  return variant == 0;
#endif
}

}  // namespace qattn
}  // namespace sageattention
