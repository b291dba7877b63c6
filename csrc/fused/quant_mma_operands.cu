// Every quantized operand of the mma.sync attention ops (qk_int8_sv_f16_attn,
// qk_int8_sv_f8_attn, qk_int8_sv_f8_attn_sm90) from fp16/bf16 Q, K and V in one op call: what
// sageattention/api.py needs per attention call, in three launches instead of five and one
// dispatcher call instead of four.
//
//   launch 1  ChannelStatsKernel     K mean (smooth_k) and V scale / mean (FP8 P·V), one grid
//   launch 2  QuantVFp8OperandKernel V -> FP8 operand                    (if v is given)
//   launch 3  QuantInt8SlabsKernel   Q and K - mean -> INT8, one grid
//
// The jobs and kernels are those of mean_over_tokens, quant_v_fp8_operand and
// quant_per_thread_int8, so the outputs are bit for bit those of the three ops called one by one
// (tests/test_quant_mma_operands_cuda.py). Global memory: Q read once, K and V twice (statistics,
// then quantization: the quantization needs the statistics of all tokens first), every output
// written once. V goes before Q and K in launch order so that its second read can hit the L2
// lines its statistics pass left (at 1K tokens, B=4, H=32, V is 32 MiB; the H100's L2 is 50 MB).
//
// Schema in csrc/torch_bindings.cpp; the CUDA implementation is registered at the bottom.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <string>

#include "fused_common.cuh"

namespace sageattention {
namespace detail {

void quant_mma_operands(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& v,
                        at::Tensor& q_int8, at::Tensor& q_scale, at::Tensor& k_int8,
                        at::Tensor& k_scale, const std::optional<at::Tensor>& k_mean,
                        const std::optional<at::Tensor>& v_operand,
                        const std::optional<at::Tensor>& v_scale,
                        const std::optional<at::Tensor>& v_mean, double q_pre_scale,
                        int64_t q_block, int64_t q_warp, int64_t q_groups_per_warp,
                        int64_t k_block, int64_t k_warp, int64_t k_groups_per_warp,
                        double v_scale_max, const std::string& tensor_layout) {
  const bool nhd = is_nhd(tensor_layout);
  check_input(q, "q");
  check_input(k, "k");
  check_same_device(q, k, "k");
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), "sageattention: q and k must have one dtype, got ",
              q.scalar_type(), " and ", k.scalar_type());
  if (v.has_value()) {
    check_same_device(q, *v, "v");
    TORCH_CHECK(v->scalar_type() == q.scalar_type(), "sageattention: v must have q's dtype ",
                q.scalar_type(), ", got ", v->scalar_type());
    TORCH_CHECK(v_operand.has_value() && v_scale.has_value(),
                "sageattention: v needs v_operand and v_scale");
  } else {
    TORCH_CHECK(!v_operand.has_value() && !v_scale.has_value() && !v_mean.has_value(),
                "sageattention: v_operand, v_scale and v_mean need v");
  }

  StatsJob stats[2];
  int stats_count = 0;
  if (k_mean.has_value()) {
    at::Tensor mean = *k_mean;
    stats[stats_count++] = mean_over_tokens_job(k, mean, nhd);
  }
  Fp8OperandJob operand;
  bool has_operand = false;
  if (v.has_value()) {
    at::Tensor operand_out = *v_operand;
    at::Tensor scale_out = *v_scale;
    StatsJob v_stats;
    has_operand = v_fp8_operand_jobs(*v, operand_out, scale_out, v_mean, v_scale_max, nhd, v_stats,
                                     operand);
    if (has_operand) stats[stats_count++] = v_stats;
  }
  Int8SlabJob int8_jobs[2] = {
      per_thread_int8_job(q, q_int8, q_scale, std::nullopt, q_pre_scale, q_block, q_warp,
                          q_groups_per_warp, nhd),
      per_thread_int8_job(k, k_int8, k_scale, k_mean, 1.0, k_block, k_warp, k_groups_per_warp,
                          nhd),
  };

  const c10::cuda::CUDAGuard device_guard(q.device());
  if (stats_count > 0) launch_channel_stats(stats, stats_count, q.scalar_type());
  if (has_operand) launch_fp8_operand(operand, q.scalar_type());
  launch_int8_slabs(int8_jobs, 2, q.scalar_type());
}

}  // namespace detail
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("quant_mma_operands", &sageattention::detail::quant_mma_operands);
}
