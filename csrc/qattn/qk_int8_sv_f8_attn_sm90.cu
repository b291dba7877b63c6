// sageattention::qk_int8_sv_f8_attn_sm90: INT8 Q·Kᵀ, FP8 e4m3 P·V attention with Hopper wgmma
// (sm_90a only: TMA loads by a producer warpgroup, two consumer warpgroups, 128-key blocks).
//
// Launcher and CUDA registration only; the kernel is csrc/qattn/qk_int8_attn_sm90.cuh,
// instantiated per head dim in csrc/qattn/instantiations/qk_int8_sv_f8_accum_f32f32_hd*_sm90.cu.
// The argument contract is qk_int8_sv_f8_attn's (same quantized operands, same permuted Vᵀ);
// pv_accum_dtype must be "fp32+fp32" (FP8 wgmma per 128-key block from zero, then an FP32 add).

#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "qk_int8_attn_host.h"

namespace sageattention {
namespace qattn {

namespace {

// SAGEATTN_SM90_VARIANT (read at every launch, so a test can switch it): the schedule variant of
// qk_int8_attn_sm90.cuh to launch, 0 when unset; a value this build does not hold is an error.
int sm90_variant_from_env() {
  const char* value = std::getenv("SAGEATTN_SM90_VARIANT");
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  const long variant = std::strtol(value, &end, 10);
  if (*end == '\0' && variant >= 0 && variant < 1024 && sm90_variant_in_build(static_cast<int>(variant))) {
    return static_cast<int>(variant);
  }
  std::string all;
  for (int v : kSm90Variants) all += (all.empty() ? "" : ", ") + std::to_string(v);
  TORCH_CHECK(false, "sageattention::qk_int8_sv_f8_attn_sm90: SAGEATTN_SM90_VARIANT='", value,
              "' is not a schedule variant of this build (a default build holds 0 only; one built with "
              "NVCC_APPEND_FLAGS=-DSAGEATTN_SM90_VARIANTS holds ", all, ")");
  return 0;
}

}  // namespace

void qk_int8_sv_f8_attn_sm90(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& v_scale, at::Tensor& o, const at::Tensor& q_scale,
                             const at::Tensor& k_scale, const std::optional<at::Tensor>& lse,
                             const std::string& tensor_layout, bool is_causal, const std::string& qk_quant_gran,
                             double qk_scale, const std::string& pv_accum_dtype) {
  const bool nhd = parse_layout(tensor_layout);
  const Dims d = check_qk(q, k, nhd);
  TORCH_CHECK(pv_accum_dtype == "fp32+fp32",
              "sageattention::qk_int8_sv_f8_attn_sm90: pv_accum_dtype must be 'fp32+fp32', got '", pv_accum_dtype,
              "'");
  check_fp8_v_operand(v, v_scale, q, d);
  AttnParams p = make_params(q, k, o, q_scale, k_scale, lse, d, is_causal, qk_quant_gran, qk_scale);
  bind_fp8_v_operand(p, v, v_scale);
  if (d.batch * d.heads_q * d.len_q == 0) return;

  const c10::cuda::CUDAGuard device_guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int batch = static_cast<int>(d.batch), heads = static_cast<int>(d.heads_q);
  const int variant = sm90_variant_from_env();
  cudaError_t err = cudaSuccess;
  switch (d.head_dim) {
#ifndef SAGEATTN_NO_HD64
    case 64:
      err = launch_qk_int8_attn_sm90<64>(p, batch, heads, variant, stream);
      break;
#endif
#ifndef SAGEATTN_NO_HD128
    case 128:
      err = launch_qk_int8_attn_sm90<128>(p, batch, heads, variant, stream);
      break;
#endif
    default:
      TORCH_CHECK(false, "sageattention::qk_int8_sv_f8_attn_sm90: head dim ", d.head_dim,
                  " was left out of this build (SAGEATTN_HEAD_DIMS at build time)");
  }
  check_launch(err, "qk_int8_sv_f8_attn_sm90", d.head_dim);
}

}  // namespace qattn
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("qk_int8_sv_f8_attn_sm90", &sageattention::qattn::qk_int8_sv_f8_attn_sm90);
}
