// sageattention::qk_int8_sv_f8_attn_sm90: INT8 Q·Kᵀ, FP8 e4m3 P·V attention with Hopper wgmma
// (sm_90a only; issue 6, first increment: cp.async tiles, two consumer warpgroups, no TMA yet).
//
// Launcher and CUDA registration only; the kernel is csrc/qattn/qk_int8_attn_sm90.cuh,
// instantiated per head dim in csrc/qattn/instantiations/qk_int8_sv_f8_accum_f32f32_hd*_sm90.cu.
// The argument contract is qk_int8_sv_f8_attn's (same quantized operands, same permuted Vᵀ);
// pv_accum_dtype must be "fp32+fp32" (FP8 wgmma per 64-key block from zero, then an FP32 add).

#include <torch/library.h>

#include "qk_int8_attn_host.h"

namespace sageattention {
namespace qattn {

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
  check_cuda_on(v, q, "v");
  check_dtype(v, at::kFloat8_e4m3fn, "v");
  TORCH_CHECK(v.dim() == 4 && v.size(0) == d.batch && v.size(1) == d.heads_kv && v.size(2) == d.head_dim &&
                  v.size(3) % kCtaK == 0 && v.size(3) >= d.len_k,
              "sageattention: v must be the [B, H_kv, D, L_pad] e4m3 operand (L_pad a multiple of 64, >= L_k = ",
              d.len_k, "; [", d.batch, ", ", d.heads_kv, ", ", d.head_dim, ", L_pad]), got ", v.sizes());
  check_rows_16b(v, v.stride(2), "v");
  check_cuda_on(v_scale, q, "v_scale");
  check_dtype(v_scale, at::kFloat, "v_scale");
  check_shape(v_scale, {d.batch, d.heads_kv, d.head_dim}, "v_scale", "[B, H_kv, D]");
  TORCH_CHECK(v_scale.stride(2) == 1, "sageattention: v_scale must have a contiguous last dimension");
  AttnParams p = make_params(q, k, o, q_scale, k_scale, lse, d, is_causal, qk_quant_gran, qk_scale);
  p.v = v.data_ptr();
  p.v_stride[0] = v.stride(0);
  p.v_stride[1] = v.stride(1);
  p.v_stride[2] = v.stride(2);
  p.v_scale = v_scale.data_ptr<float>();
  p.vs_stride[0] = v_scale.stride(0);
  p.vs_stride[1] = v_scale.stride(1);
  if (d.batch * d.heads_q * d.len_q == 0) return;

  const c10::cuda::CUDAGuard device_guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int batch = static_cast<int>(d.batch), heads = static_cast<int>(d.heads_q);
  cudaError_t err = cudaSuccess;
  switch (d.head_dim) {
#ifndef SAGEATTN_NO_HD64
    case 64:
      err = launch_qk_int8_attn_sm90<64>(p, batch, heads, stream);
      break;
#endif
#ifndef SAGEATTN_NO_HD128
    case 128:
      err = launch_qk_int8_attn_sm90<128>(p, batch, heads, stream);
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
