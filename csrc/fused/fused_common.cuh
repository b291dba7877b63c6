// Host and device helpers shared by the quantization ops of csrc/fused/ (one copy, inline, so
// every .cu that includes it links without duplicate symbols).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <optional>
#include <string>

namespace sageattention {
// A named namespace, not an anonymous one: nvcc mangles anonymous namespaces with a per-process
// hash, which made two builds of the same source differ (see setup.py, reproducible builds).
namespace detail {

constexpr int kMaxHeadDim = 256;
constexpr int64_t kMaxGridYZ = 65535;  // CUDA limit on gridDim.y / gridDim.z (heads, batch)

// Element strides of one [B, H, L, D] view, whatever the memory layout (last dim contiguous).
struct TokenStrides {
  int64_t batch;
  int64_t head;
  int64_t token;
};

__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Round half away from zero and clamp to [-127, 127]: floor(|v| + 0.5) with the sign put back,
// as the reference does (torch.round would round half to even).
__device__ __forceinline__ int8_t round_to_int8(float v) {
  const float magnitude = fminf(floorf(__fadd_rn(fabsf(v), 0.5f)), 127.0f);
  return static_cast<int8_t>(copysignf(magnitude, v));
}

inline bool is_nhd(const std::string& tensor_layout) {
  TORCH_CHECK(tensor_layout == "HND" || tensor_layout == "NHD",
              "sageattention: tensor_layout must be 'HND' or 'NHD', got '", tensor_layout, "'");
  return tensor_layout == "NHD";
}

// Strides of a 4-d tensor seen as [B, H, L, D].
inline TokenStrides token_strides(const at::Tensor& t, bool nhd) {
  return nhd ? TokenStrides{t.stride(0), t.stride(2), t.stride(1)}
             : TokenStrides{t.stride(0), t.stride(1), t.stride(2)};
}

inline void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda(), "sageattention: ", name, " must be a CUDA tensor, got device ",
              x.device());
  TORCH_CHECK(x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16, "sageattention: ",
              name, " must be float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 4, "sageattention: ", name,
              " must be 4-d ([B, H, L, D] or [B, L, H, D]), got ", x.dim(), " dims");
  TORCH_CHECK(x.size(3) >= 1 && x.size(3) <= kMaxHeadDim, "sageattention: ", name,
              " head dim must be in [1, ", kMaxHeadDim, "], got ", x.size(3));
  TORCH_CHECK(x.stride(3) == 1, "sageattention: ", name,
              " must have a contiguous last dimension (stride 1), got stride ", x.stride(3));
}

inline void check_same_device(const at::Tensor& x, const at::Tensor& other, const char* name) {
  TORCH_CHECK(other.device() == x.device(), "sageattention: ", name, " must be on ", x.device(),
              " like x, got ", other.device());
}

// [B, H, 1, D] float32 mean of x (seen as [B, H, L, D]).
inline void check_mean(const at::Tensor& x, const at::Tensor& mean, bool nhd, const char* name) {
  const int64_t heads = x.size(nhd ? 2 : 1);
  check_same_device(x, mean, name);
  TORCH_CHECK(mean.scalar_type() == at::kFloat, "sageattention: ", name,
              " must be float32, got ", mean.scalar_type());
  TORCH_CHECK(mean.dim() == 4 && mean.size(0) == x.size(0) && mean.size(1) == heads &&
                  mean.size(2) == 1 && mean.size(3) == x.size(3),
              "sageattention: ", name, " must have shape [", x.size(0), ", ", heads, ", 1, ",
              x.size(3), "], got ", mean.sizes());
  TORCH_CHECK(mean.stride(3) == 1, "sageattention: ", name,
              " must have a contiguous last dimension");
}

// The optional mean a quantizer subtracts (K smoothing), checked, as kernel arguments: its data
// pointer (null without one) and [B, H] strides.
struct MeanArg {
  const float* ptr = nullptr;
  TokenStrides strides{0, 0, 0};
};

inline MeanArg optional_mean(const at::Tensor& x, const std::optional<at::Tensor>& mean, bool nhd) {
  MeanArg arg;
  if (mean.has_value()) {
    check_mean(x, *mean, nhd, "mean");
    arg.strides = TokenStrides{mean->stride(0), mean->stride(1), 0};
    arg.ptr = mean->data_ptr<float>();
  }
  return arg;
}

// Batch and head counts fit the grid's y/z dims; the token count fits an int.
inline void check_grid_dims(int64_t batch, int64_t heads, int64_t tokens) {
  TORCH_CHECK(heads <= kMaxGridYZ && batch <= kMaxGridYZ, "sageattention: at most ", kMaxGridYZ,
              " heads and batch entries are supported, got ", heads, " and ", batch);
  TORCH_CHECK(tokens <= INT32_MAX, "sageattention: sequence too long: ", tokens, " tokens");
}

}  // namespace detail
}  // namespace sageattention
