// Per-block INT8 quantization of Q and K, with K smoothing fused in.
//
// Math (SageAttention paper §3 "smooth K" and per-block INT8; algorithm notes §1.5, §2.2):
//   y      = (x - mean) * pre_scale             mean = per-channel K mean (or none for Q),
//                                               pre_scale = sm_scale * log2(e) for Q, 1 for K
//   scale  = absmax(y over one block of tokens) / 127
//   x_int8 = clamp(round_half_away_from_zero(y / scale), -127, 127);  scale 0 -> all zeros
// which is bit-for-bit quant_per_block_int8_ref in sageattention/testing/reference.py when the
// same mean is used. Every float step uses the explicit IEEE round-to-nearest intrinsics
// (__fsub_rn, __fmul_rn, __fdiv_rn, __fadd_rn): they cannot be contracted into FMAs or replaced
// by approximate division, so the integer outputs do not depend on --use_fast_math or -fmad.
//
// Schemas live in csrc/torch_bindings.cpp; the CUDA implementations are registered at the bottom.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "fused_common.cuh"

namespace sageattention {
// A named namespace, not an anonymous one: nvcc mangles anonymous namespaces with a per-process
// hash, which made two builds of the same source differ (see setup.py, reproducible builds).
namespace detail {

constexpr int kQuantThreads = 256;
constexpr int kMaxBlockSize = 1024;  // keeps block_size * head_dim inside int range

// Max over the whole thread block; every thread gets the result.
__device__ float block_max(float v) {
  __shared__ float warp_results[kQuantThreads / 32];
  __shared__ float result;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  v = warp_max(v);
  if (lane == 0) warp_results[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < static_cast<int>(blockDim.x / 32) ? warp_results[lane] : 0.0f;
    w = warp_max(w);
    if (lane == 0) result = w;
  }
  __syncthreads();
  return result;
}

// One thread block quantizes one block of `block_size` tokens of one (batch, head).
// grid = (ceil(L / block_size), H, B), block = kQuantThreads.
// The block is read twice (absmax, then quantize) instead of being staged in shared memory:
// 128 tokens x 256 channels x 2 bytes = 64 KB would cut occupancy, and the second read hits L2.
template <typename T>
__global__ void QuantPerBlockInt8Kernel(const T* __restrict__ x, int8_t* __restrict__ x_int8,
                                        float* __restrict__ scale, const float* __restrict__ mean,
                                        TokenStrides x_strides, TokenStrides out_strides,
                                        TokenStrides scale_strides, TokenStrides mean_strides,
                                        int num_tokens, int head_dim, int block_size,
                                        float pre_scale) {
  const int block = blockIdx.x;
  const int64_t head = blockIdx.y;
  const int64_t batch = blockIdx.z;
  const int first_token = block * block_size;
  const int tokens = min(block_size, num_tokens - first_token);
  const int elements = tokens * head_dim;

  const T* x_block = x + batch * x_strides.batch + head * x_strides.head +
                     static_cast<int64_t>(first_token) * x_strides.token;
  int8_t* out_block = x_int8 + batch * out_strides.batch + head * out_strides.head +
                      static_cast<int64_t>(first_token) * out_strides.token;
  const float* mean_row =
      mean == nullptr ? nullptr : mean + batch * mean_strides.batch + head * mean_strides.head;

  auto transformed = [&](int i) {
    const int token = i / head_dim;
    const int channel = i % head_dim;
    float v = to_float(x_block[static_cast<int64_t>(token) * x_strides.token + channel]);
    if (mean_row != nullptr) v = __fsub_rn(v, mean_row[channel]);
    return __fmul_rn(v, pre_scale);
  };

  float absmax = 0.0f;
  for (int i = threadIdx.x; i < elements; i += blockDim.x) {
    absmax = fmaxf(absmax, fabsf(transformed(i)));
  }
  absmax = block_max(absmax);
  const float block_scale = __fdiv_rn(absmax, 127.0f);
  if (threadIdx.x == 0) {
    scale[batch * scale_strides.batch + head * scale_strides.head + block * scale_strides.token] =
        block_scale;
  }

  for (int i = threadIdx.x; i < elements; i += blockDim.x) {
    const float scaled = block_scale > 0.0f ? __fdiv_rn(transformed(i), block_scale) : 0.0f;
    const int token = i / head_dim;
    const int channel = i % head_dim;
    out_block[static_cast<int64_t>(token) * out_strides.token + channel] = round_to_int8(scaled);
  }
}

// ---- host side ----------------------------------------------------------------------------

void quant_per_block_int8(const at::Tensor& x, at::Tensor& x_int8, at::Tensor& scale,
                          const std::optional<at::Tensor>& mean, double pre_scale,
                          int64_t block_size, const std::string& tensor_layout) {
  const bool nhd = is_nhd(tensor_layout);
  check_input(x, "x");
  const int64_t batch = x.size(0);
  const int64_t heads = x.size(nhd ? 2 : 1);
  const int64_t tokens = x.size(nhd ? 1 : 2);
  const int64_t head_dim = x.size(3);
  TORCH_CHECK(block_size >= 1 && block_size <= kMaxBlockSize,
              "sageattention: block_size must be in [1, ", kMaxBlockSize, "], got ", block_size);
  TORCH_CHECK(heads <= kMaxGridYZ && batch <= kMaxGridYZ, "sageattention: at most ", kMaxGridYZ,
              " heads and batch entries are supported, got ", heads, " and ", batch);
  TORCH_CHECK(tokens <= INT32_MAX, "sageattention: sequence too long: ", tokens, " tokens");

  check_same_device(x, x_int8, "x_int8");
  TORCH_CHECK(x_int8.scalar_type() == at::kChar, "sageattention: x_int8 must be int8, got ",
              x_int8.scalar_type());
  TORCH_CHECK(x_int8.sizes() == x.sizes(), "sageattention: x_int8 must have x's shape ",
              x.sizes(), ", got ", x_int8.sizes());
  TORCH_CHECK(x_int8.stride(3) == 1,
              "sageattention: x_int8 must have a contiguous last dimension");

  const int64_t blocks = (tokens + block_size - 1) / block_size;
  check_same_device(x, scale, "scale");
  TORCH_CHECK(scale.scalar_type() == at::kFloat, "sageattention: scale must be float32, got ",
              scale.scalar_type());
  TORCH_CHECK(scale.dim() == 3 && scale.size(0) == batch && scale.size(1) == heads &&
                  scale.size(2) == blocks,
              "sageattention: scale must have shape [", batch, ", ", heads, ", ", blocks,
              "] (ceil(L / block_size) blocks), got ", scale.sizes());
  const MeanArg mean_arg = optional_mean(x, mean, nhd);
  if (blocks == 0 || batch == 0 || heads == 0) return;

  const c10::cuda::CUDAGuard device_guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(heads),
                  static_cast<unsigned>(batch));
  const TokenStrides x_strides = token_strides(x, nhd);
  const TokenStrides out_strides = token_strides(x_int8, nhd);
  const TokenStrides scale_strides{scale.stride(0), scale.stride(1), scale.stride(2)};
  const float pre_scale_f = static_cast<float>(pre_scale);
  if (x.scalar_type() == at::kHalf) {
    QuantPerBlockInt8Kernel<__half><<<grid, kQuantThreads, 0, stream>>>(
        reinterpret_cast<const __half*>(x.data_ptr()), x_int8.data_ptr<int8_t>(),
        scale.data_ptr<float>(), mean_arg.ptr, x_strides, out_strides, scale_strides, mean_arg.strides,
        static_cast<int>(tokens), static_cast<int>(head_dim), static_cast<int>(block_size),
        pre_scale_f);
  } else {
    QuantPerBlockInt8Kernel<__nv_bfloat16><<<grid, kQuantThreads, 0, stream>>>(
        reinterpret_cast<const __nv_bfloat16*>(x.data_ptr()), x_int8.data_ptr<int8_t>(),
        scale.data_ptr<float>(), mean_arg.ptr, x_strides, out_strides, scale_strides, mean_arg.strides,
        static_cast<int>(tokens), static_cast<int>(head_dim), static_cast<int>(block_size),
        pre_scale_f);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

StatsJob mean_over_tokens_job(const at::Tensor& x, at::Tensor& mean, bool nhd) {
  check_input(x, "x");
  const int64_t batch = x.size(0);
  const int64_t heads = x.size(nhd ? 2 : 1);
  const int64_t tokens = x.size(nhd ? 1 : 2);
  const int64_t head_dim = x.size(3);
  TORCH_CHECK(tokens >= 1, "sageattention: x has no tokens; the mean over tokens is undefined");
  TORCH_CHECK(tokens <= INT32_MAX, "sageattention: sequence too long: ", tokens, " tokens");
  TORCH_CHECK(heads <= kMaxGridYZ && batch <= kMaxGridYZ, "sageattention: at most ", kMaxGridYZ,
              " heads and batch entries are supported, got ", heads, " and ", batch);
  check_mean(x, mean, nhd, "mean");
  StatsJob job;
  job.kind = StatsJob::kMean;
  job.x = x.data_ptr();
  job.x_strides = token_strides(x, nhd);
  job.mean = mean.data_ptr<float>();
  job.mean_strides = TokenStrides{mean.stride(0), mean.stride(1), 0};
  job.batch = static_cast<int>(batch);
  job.heads = static_cast<int>(heads);
  job.num_tokens = static_cast<int>(tokens);
  job.head_dim = static_cast<int>(head_dim);
  job.head_dim_out = static_cast<int>(head_dim);
  return job;
}

// mean[b, h, 0, c] = sum_t x[b, h, t, c] / L in float32, by ChannelStatsKernel
// (quant_v_fp8_operand.cu; its summation order: 8 token classes t mod 8, then class order).
void mean_over_tokens(const at::Tensor& x, at::Tensor& mean, const std::string& tensor_layout) {
  const bool nhd = is_nhd(tensor_layout);
  StatsJob job = mean_over_tokens_job(x, mean, nhd);
  if (job.batch == 0 || job.heads == 0) return;
  const c10::cuda::CUDAGuard device_guard(x.device());
  launch_channel_stats(&job, 1, x.scalar_type());
}

}  // namespace detail
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("quant_per_block_int8", &sageattention::detail::quant_per_block_int8);
  m.impl("mean_over_tokens", &sageattention::detail::mean_over_tokens);
}
