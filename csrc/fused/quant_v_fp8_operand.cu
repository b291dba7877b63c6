// V (fp16/bf16) -> the FP8 e4m3 P·V operand of qk_int8_sv_f8_attn, with per-channel scales and
// optional V smoothing, in two kernels and two reads of V.
//
// Math (research notes §2.3.4, §2.3.6, §2.4), per (batch, head, channel c) over all L tokens:
//   mean_c  = sum_c * fl(1 / L)                               (smooth_v only; else 0)
//   scale_c = max(fl(max_c - mean_c), fl(mean_c - min_c)) * fl(1 / scale_max)
//   v_fp8   = e4m3_satfinite_rn(clamp(fl(v - mean_c) / (scale_c or 1), ±scale_max))
// This is, operation for operation, what sageattention/triton/quant_per_channel_fp8.py computes
// (its scale and mean divisions are torch divisions by a Python number on a CUDA tensor, which
// PyTorch performs as a multiplication by the float32 reciprocal; we do the same so the bytes
// match). max(max - mean, mean - min) is the absmax of the rounded differences because fp32
// rounding is monotonic. Only the mean's summation order differs from the Triton path (it sums
// in another order), so with smooth_v the bytes can differ by one e4m3 step where the mean does.
//
// Layout of the operand (csrc/torch_bindings.cpp, qk_int8_sv_f8_attn): [B, H, D_out, L_pad],
// tokens contiguous, L_pad = ceil(L / 64) * 64, zeros past L and in channels >= D; inside each
// group of 16 tokens position p holds token FP8_V_TOKEN_PERMUTATION[p] =
// [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15][p] (sageattention/_ops.py).
//
// Kernels:
//   VChannelStatsKernel    grid (ceil(D_out / 32), H, B), block (32, 8): sum/max/min per channel
//                          over all tokens (a warp reads 32 consecutive channels of a token),
//                          writes scale and mean. One read of V.
//   QuantVFp8OperandKernel grid (L_pad / 64, H, B), block 256: quantizes a 64-token tile (reads
//                          along channels, coalesced), stores the e4m3 bytes transposed in shared
//                          memory, then writes each channel's 64 tokens as 16 permuted 4-byte words
//                          (coalesced along tokens). Second read of V, one write of the operand.
// A single kernel would need a grid-wide barrier between the reduction over L and the
// quantization; the second read mostly hits L2 at the lengths where launches dominate.
//
// Schema in csrc/torch_bindings.cpp; the CUDA implementation is registered at the bottom.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_fp8.h>

#include <cstdint>
#include <string>

#include "fused_common.cuh"

namespace sageattention {
namespace detail {

constexpr int kStatsChannels = 32;  // one warp across channels: coalesced loads
constexpr int kStatsRows = 8;       // token rows reduced in parallel, then combined
constexpr int kTileTokens = 64;     // L_pad granularity of the operand (the attention's key block)
constexpr int kTileStride = kTileTokens + 4;  // bytes per channel row in shared memory: the pad
                                              // spreads consecutive channels over banks
constexpr int kOperandThreads = 256;
constexpr float kE4M3Max = 448.0f;

// grid = (ceil(D_out / 32), H, B), block = (32, 8).
template <typename T>
__global__ void VChannelStatsKernel(const T* __restrict__ v, float* __restrict__ scale,
                                    float* __restrict__ mean, TokenStrides v_strides,
                                    int64_t scale_head_stride, int64_t scale_batch_stride,
                                    int num_tokens, int head_dim, int head_dim_out,
                                    float inv_tokens, float inv_scale_max) {
  __shared__ float partial_sum[kStatsRows][kStatsChannels];
  __shared__ float partial_max[kStatsRows][kStatsChannels];
  __shared__ float partial_min[kStatsRows][kStatsChannels];
  const int channel = blockIdx.x * kStatsChannels + threadIdx.x;
  const int64_t head = blockIdx.y;
  const int64_t batch = blockIdx.z;
  float sum = 0.0f;
  float vmax = -INFINITY;
  float vmin = INFINITY;
  if (channel < head_dim) {
    const T* column = v + batch * v_strides.batch + head * v_strides.head + channel;
    // int64 counter: with num_tokens near INT32_MAX an int `token += 8` would overflow.
    for (int64_t token = threadIdx.y; token < num_tokens; token += kStatsRows) {
      const float x = to_float(column[token * v_strides.token]);
      sum = __fadd_rn(sum, x);
      vmax = fmaxf(vmax, x);
      vmin = fminf(vmin, x);
    }
  }
  partial_sum[threadIdx.y][threadIdx.x] = sum;
  partial_max[threadIdx.y][threadIdx.x] = vmax;
  partial_min[threadIdx.y][threadIdx.x] = vmin;
  __syncthreads();
  if (threadIdx.y != 0 || channel >= head_dim_out) return;
  float channel_scale = 0.0f;
  float channel_mean = 0.0f;
  if (channel < head_dim) {
    for (int row = 1; row < kStatsRows; ++row) {
      sum = __fadd_rn(sum, partial_sum[row][threadIdx.x]);
      vmax = fmaxf(vmax, partial_max[row][threadIdx.x]);
      vmin = fminf(vmin, partial_min[row][threadIdx.x]);
    }
    float absmax;
    if (mean != nullptr) {
      channel_mean = __fmul_rn(sum, inv_tokens);
      absmax = fmaxf(__fsub_rn(vmax, channel_mean), __fsub_rn(channel_mean, vmin));
    } else {
      absmax = fmaxf(vmax, -vmin);
    }
    channel_scale = __fmul_rn(absmax, inv_scale_max);
  }
  const int64_t row = batch * scale_batch_stride + head * scale_head_stride;
  scale[row + channel] = channel_scale;
  if (mean != nullptr) mean[row + channel] = channel_mean;
}

// grid = (L_pad / 64, H, B), block = kOperandThreads (256). scale/mean: contiguous [B, H, D_out].
template <typename T>
__global__ void QuantVFp8OperandKernel(const T* __restrict__ v, uint32_t* __restrict__ operand,
                                       const float* __restrict__ scale,
                                       const float* __restrict__ mean, TokenStrides v_strides,
                                       int num_heads, int num_tokens, int padded_tokens,
                                       int head_dim, int head_dim_out, float scale_max) {
  __shared__ uint8_t tile[kMaxHeadDim * kTileStride];
  __shared__ float divisor[kMaxHeadDim];
  __shared__ float channel_mean[kMaxHeadDim];
  const int first_token = blockIdx.x * kTileTokens;
  const int64_t head = blockIdx.y;
  const int64_t batch = blockIdx.z;
  const int64_t bh = batch * num_heads + head;

  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    const float s = scale[bh * head_dim_out + c];
    // Dividing by 1 where the scale is 0 is what the Triton path does (the values are then 0,
    // or tiny enough that e4m3 rounds them to 0).
    divisor[c] = s > 0.0f ? s : 1.0f;
    channel_mean[c] = mean == nullptr ? 0.0f : mean[bh * head_dim_out + c];
  }
  __syncthreads();

  // Each warp takes token rows, its lanes consecutive channels: coalesced loads, and the byte
  // stores to tile[c][t] hit distinct banks (the row stride, 17 words, is odd).
  const T* v_bh = v + batch * v_strides.batch + head * v_strides.head;
  const int lane = threadIdx.x % 32;
  for (int t = threadIdx.x / 32; t < kTileTokens; t += kOperandThreads / 32) {
    const int token = first_token + t;
    const T* v_row = v_bh + static_cast<int64_t>(token) * v_strides.token;
    for (int c = lane; c < head_dim_out; c += 32) {
      __nv_fp8_storage_t byte = 0;  // padding tokens and channels
      if (token < num_tokens && c < head_dim) {
        float x = to_float(v_row[c]);
        if (mean != nullptr) x = __fsub_rn(x, channel_mean[c]);
        const float y = fminf(fmaxf(__fdiv_rn(x, divisor[c]), -scale_max), scale_max);
        byte = __nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
      }
      tile[c * kTileStride + t] = byte;
    }
  }
  __syncthreads();

  // Word w of a channel row covers positions 4w..4w+3 of 16-token group w / 4; positions
  // 4j..4j+3 of a group hold its tokens 2j, 2j+1, 2j+8, 2j+9 (FP8_V_TOKEN_PERMUTATION).
  constexpr int kWordsPerTile = kTileTokens / 4;
  const int words = head_dim_out * kWordsPerTile;
  for (int i = threadIdx.x; i < words; i += blockDim.x) {
    const int c = i / kWordsPerTile;
    const int w = i % kWordsPerTile;
    const uint8_t* src = tile + c * kTileStride + (w / 4) * 16 + (w % 4) * 2;
    const uint32_t word = static_cast<uint32_t>(src[0]) | (static_cast<uint32_t>(src[1]) << 8) |
                          (static_cast<uint32_t>(src[8]) << 16) |
                          (static_cast<uint32_t>(src[9]) << 24);
    const int64_t row = bh * head_dim_out + c;
    operand[(row * padded_tokens + first_token) / 4 + w] = word;
  }
}

void quant_v_fp8_operand(const at::Tensor& v, at::Tensor& v_operand, at::Tensor& v_scale,
                         const std::optional<at::Tensor>& v_mean, double scale_max,
                         const std::string& tensor_layout) {
  const bool nhd = is_nhd(tensor_layout);
  check_input(v, "v");
  const int64_t batch = v.size(0);
  const int64_t heads = v.size(nhd ? 2 : 1);
  const int64_t tokens = v.size(nhd ? 1 : 2);
  const int64_t head_dim = v.size(3);
  check_grid_dims(batch, heads, tokens);
  TORCH_CHECK(scale_max > 0.0 && scale_max <= kE4M3Max,
              "sageattention: scale_max must be in (0, 448], got ", scale_max);

  const int64_t padded = (tokens + kTileTokens - 1) / kTileTokens * kTileTokens;
  check_same_device(v, v_operand, "v_operand");
  TORCH_CHECK(v_operand.scalar_type() == at::kFloat8_e4m3fn,
              "sageattention: v_operand must be float8_e4m3fn, got ", v_operand.scalar_type());
  TORCH_CHECK(v_operand.dim() == 4 && v_operand.size(0) == batch && v_operand.size(1) == heads &&
                  v_operand.size(2) >= head_dim && v_operand.size(2) <= kMaxHeadDim &&
                  v_operand.size(3) == padded,
              "sageattention: v_operand must have shape [", batch, ", ", heads, ", D_out, ",
              padded, "] ([B, H, D_out, ceil(L / 64) * 64], ", head_dim, " <= D_out <= ",
              kMaxHeadDim, "), got ", v_operand.sizes());
  // Written as 4-byte words (one permuted quarter of a 16-token group each).
  TORCH_CHECK(v_operand.is_contiguous() &&
                  reinterpret_cast<uintptr_t>(v_operand.data_ptr()) % 4 == 0,
              "sageattention: v_operand must be contiguous and 4-byte aligned");
  const int64_t head_dim_out = v_operand.size(2);

  check_same_device(v, v_scale, "v_scale");
  TORCH_CHECK(v_scale.scalar_type() == at::kFloat, "sageattention: v_scale must be float32, got ",
              v_scale.scalar_type());
  TORCH_CHECK(v_scale.dim() == 3 && v_scale.size(0) == batch && v_scale.size(1) == heads &&
                  v_scale.size(2) == head_dim_out && v_scale.is_contiguous(),
              "sageattention: v_scale must be a contiguous [", batch, ", ", heads, ", ",
              head_dim_out, "] tensor, got ", v_scale.sizes(), " with strides ", v_scale.strides());
  float* mean_ptr = nullptr;
  if (v_mean.has_value()) {
    check_same_device(v, *v_mean, "v_mean");
    TORCH_CHECK(v_mean->scalar_type() == at::kFloat, "sageattention: v_mean must be float32, got ",
                v_mean->scalar_type());
    TORCH_CHECK(v_mean->dim() == 4 && v_mean->size(0) == batch && v_mean->size(1) == heads &&
                    v_mean->size(2) == 1 && v_mean->size(3) == head_dim_out &&
                    v_mean->is_contiguous(),
                "sageattention: v_mean must be a contiguous [", batch, ", ", heads, ", 1, ",
                head_dim_out, "] tensor, got ", v_mean->sizes(), " with strides ",
                v_mean->strides());
    mean_ptr = v_mean->data_ptr<float>();
  }
  if (batch == 0 || heads == 0) return;
  if (tokens == 0) {  // no tokens: no operand columns; scale (and mean) 0, like the Triton path
    v_scale.zero_();
    if (v_mean.has_value()) v_mean->zero_();
    return;
  }

  const c10::cuda::CUDAGuard device_guard(v.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const TokenStrides v_strides = token_strides(v, nhd);
  const dim3 stats_grid(static_cast<unsigned>((head_dim_out + kStatsChannels - 1) / kStatsChannels),
                        static_cast<unsigned>(heads), static_cast<unsigned>(batch));
  const dim3 tile_grid(static_cast<unsigned>(padded / kTileTokens), static_cast<unsigned>(heads),
                       static_cast<unsigned>(batch));
  // The float32 reciprocals PyTorch multiplies by when the Triton path divides by a Python number.
  const float inv_tokens = 1.0f / static_cast<float>(tokens);
  const float inv_scale_max = 1.0f / static_cast<float>(scale_max);
  auto launch = [&](auto* typed_v) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(typed_v)>>;
    VChannelStatsKernel<T><<<stats_grid, dim3(kStatsChannels, kStatsRows), 0, stream>>>(
        typed_v, v_scale.data_ptr<float>(), mean_ptr, v_strides, head_dim_out,
        heads * head_dim_out, static_cast<int>(tokens), static_cast<int>(head_dim),
        static_cast<int>(head_dim_out), inv_tokens, inv_scale_max);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    QuantVFp8OperandKernel<T><<<tile_grid, kOperandThreads, 0, stream>>>(
        typed_v, reinterpret_cast<uint32_t*>(v_operand.data_ptr()), v_scale.data_ptr<float>(),
        mean_ptr, v_strides, static_cast<int>(heads), static_cast<int>(tokens),
        static_cast<int>(padded), static_cast<int>(head_dim), static_cast<int>(head_dim_out),
        static_cast<float>(scale_max));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (v.scalar_type() == at::kHalf) {
    launch(reinterpret_cast<const __half*>(v.data_ptr()));
  } else {
    launch(reinterpret_cast<const __nv_bfloat16*>(v.data_ptr()));
  }
}

}  // namespace detail
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("quant_v_fp8_operand", &sageattention::detail::quant_v_fp8_operand);
}
