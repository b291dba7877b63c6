// sageattention::qk_int8_sv_f8_attn: INT8 Q·Kᵀ, FP8 e4m3 P·V attention (SageAttention2 / 2++,
// sm89 path; also built for sm100-sm121, where FP8 mma.sync exists too).
//
// Launcher and CUDA registration only; the kernel is csrc/qattn/qk_int8_attn.cuh, instantiated per
// head dim and accumulation mode in csrc/qattn/instantiations/qk_int8_sv_f8_accum_*_sm89.cu.
// Schema and argument contract (including the permuted, transposed V): csrc/torch_bindings.cpp.

#include <torch/library.h>

#include "qk_int8_attn_host.h"

namespace sageattention {
namespace qattn {

void qk_int8_sv_f8_attn(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& v_scale,
                        at::Tensor& o, const at::Tensor& q_scale, const at::Tensor& k_scale,
                        const std::optional<at::Tensor>& lse, const std::string& tensor_layout, bool is_causal,
                        const std::string& qk_quant_gran, double qk_scale, const std::string& pv_accum_dtype) {
  const bool nhd = parse_layout(tensor_layout);
  const Dims d = check_qk(q, k, nhd);
  TORCH_CHECK(pv_accum_dtype == "fp32" || pv_accum_dtype == "fp32+fp32" || pv_accum_dtype == "fp32+fp16",
              "sageattention: pv_accum_dtype must be 'fp32', 'fp32+fp32' or 'fp32+fp16', got '", pv_accum_dtype,
              "'");
  check_fp8_v_operand(v, v_scale, q, d);
  AttnParams p = make_params(q, k, o, q_scale, k_scale, lse, d, is_causal, qk_quant_gran, qk_scale);
  bind_fp8_v_operand(p, v, v_scale);
  if (d.batch * d.heads_q * d.len_q == 0) return;

  const c10::cuda::CUDAGuard device_guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int batch = static_cast<int>(d.batch), heads = static_cast<int>(d.heads_q);
  cudaError_t err;
  if (pv_accum_dtype == "fp32") {
    err = dispatch_head_dim<PvMode::kF8Acc32>(p, d.head_dim, batch, heads, stream, "qk_int8_sv_f8_attn");
  } else if (pv_accum_dtype == "fp32+fp32") {
    err = dispatch_head_dim<PvMode::kF8Acc32Buf>(p, d.head_dim, batch, heads, stream, "qk_int8_sv_f8_attn");
  } else {
    err = dispatch_head_dim<PvMode::kF8Acc16Buf>(p, d.head_dim, batch, heads, stream, "qk_int8_sv_f8_attn");
  }
  check_launch(err, "qk_int8_sv_f8_attn", d.head_dim);
}

}  // namespace qattn
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("qk_int8_sv_f8_attn", &sageattention::qattn::qk_int8_sv_f8_attn);
}
