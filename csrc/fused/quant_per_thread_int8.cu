// Per-thread (and per-warp) INT8 quantization of Q and K in the groups of the mma.sync fragment
// layout, with K smoothing fused in.
//
// Groups (research notes §2.3.2, SageAttention2 Eq. 8): the tokens are cut into slabs of `warp`
// rows (the rows one warp owns: 16 for Q, 64 for K); row r of slab s belongs to group
//   s * G + (r mod 8) / (8 / G)        G = groups_per_warp in {1, 2, 4, 8}
// so G = 8 is per-thread Q (rows with equal r mod 8), G = 4 per-thread K (r mod 8 in {2t, 2t+1}),
// G = 1 per-warp. Inside a group, exactly as quant_int8_slab_groups in
// sageattention/testing/reference.py and sageattention/triton/quant_per_thread_int8.py:
//   y      = (x - mean) * pre_scale
//   scale  = absmax(y) / 127                           (0 for an all-zero group)
//   x_int8 = clamp(round_half_away_from_zero(y / (scale or 1)), -127, 127)
// with the explicit round-to-nearest intrinsics (__fsub_rn, __fmul_rn, __fdiv_rn), so the bytes do
// not depend on --use_fast_math or FMA contraction. The scale array is padded to whole `block`-row
// tiles ([B, H, ceil(L / block) * (block / warp) * G]): the padding groups get scale 0.
//
// Schema in csrc/torch_bindings.cpp; the CUDA implementation is registered at the bottom.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <string>

#include "fused_common.cuh"

namespace sageattention {
namespace detail {

// 8 warps: warp w handles the rows r = w, w + 8, ... of its slab, i.e. exactly the rows with
// r mod 8 == w, so each warp lies inside one group and the group absmax is a max over the
// per-warp maxima of 8 / G warps: no atomics, one __syncthreads.
constexpr int kPerThreadWarps = 8;
constexpr int kPerThreadThreads = kPerThreadWarps * 32;
constexpr int kMaxSlabRows = 1024;

// grid = (slabs, H, B), block = 256. x is read twice (absmax, then quantize): a slab is at most
// 64 rows x 256 channels x 2 bytes = 32 KB, so the second read hits L1/L2.
template <typename T>
__global__ void QuantPerThreadInt8Kernel(const T* __restrict__ x, int8_t* __restrict__ x_int8,
                                         float* __restrict__ scale,
                                         const float* __restrict__ mean, TokenStrides x_strides,
                                         TokenStrides out_strides, TokenStrides scale_strides,
                                         TokenStrides mean_strides, int num_tokens, int head_dim,
                                         int head_dim_out, int slab_rows, int groups,
                                         float pre_scale) {
  __shared__ float warp_absmax[kPerThreadWarps];
  const int slab = blockIdx.x;
  const int64_t head = blockIdx.y;
  const int64_t batch = blockIdx.z;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int first_token = slab * slab_rows;
  // Rows of this slab that exist (the padding slabs of the last tile have none).
  const int rows = max(0, min(slab_rows, num_tokens - first_token));

  const T* x_slab = x + batch * x_strides.batch + head * x_strides.head +
                    static_cast<int64_t>(first_token) * x_strides.token;
  int8_t* out_slab = x_int8 + batch * out_strides.batch + head * out_strides.head +
                     static_cast<int64_t>(first_token) * out_strides.token;
  const float* mean_row =
      mean == nullptr ? nullptr : mean + batch * mean_strides.batch + head * mean_strides.head;

  auto transformed = [&](int row, int channel) {
    float v = to_float(x_slab[static_cast<int64_t>(row) * x_strides.token + channel]);
    if (mean_row != nullptr) v = __fsub_rn(v, mean_row[channel]);
    return __fmul_rn(v, pre_scale);
  };

  float absmax = 0.0f;
  for (int row = warp; row < rows; row += kPerThreadWarps) {
    for (int channel = lane; channel < head_dim; channel += 32) {
      absmax = fmaxf(absmax, fabsf(transformed(row, channel)));
    }
  }
  absmax = warp_max(absmax);
  if (lane == 0) warp_absmax[warp] = absmax;
  __syncthreads();

  const int warps_per_group = kPerThreadWarps / groups;
  const int group = warp / warps_per_group;
  float group_absmax = 0.0f;
  for (int w = group * warps_per_group; w < (group + 1) * warps_per_group; ++w) {
    group_absmax = fmaxf(group_absmax, warp_absmax[w]);
  }
  const float group_scale = __fdiv_rn(group_absmax, 127.0f);
  if (lane == 0 && warp % warps_per_group == 0) {
    scale[batch * scale_strides.batch + head * scale_strides.head +
          static_cast<int64_t>(slab) * groups + group] =
        group_scale;
  }
  // Dividing by 1 where the scale is 0 (it can underflow for tiny nonzero values) is what the
  // reference does; it then rounds those values to 0.
  const float divisor = group_scale > 0.0f ? group_scale : 1.0f;
  for (int row = warp; row < rows; row += kPerThreadWarps) {
    int8_t* out_row = out_slab + static_cast<int64_t>(row) * out_strides.token;
    for (int channel = lane; channel < head_dim_out; channel += 32) {
      // Channels past head_dim are the kernel's head-dim padding: zeros.
      out_row[channel] =
          channel < head_dim ? round_to_int8(__fdiv_rn(transformed(row, channel), divisor)) : 0;
    }
  }
}

void quant_per_thread_int8(const at::Tensor& x, at::Tensor& x_int8, at::Tensor& scale,
                           const std::optional<at::Tensor>& mean, double pre_scale, int64_t block,
                           int64_t warp, int64_t groups_per_warp,
                           const std::string& tensor_layout) {
  const bool nhd = is_nhd(tensor_layout);
  check_input(x, "x");
  const int64_t batch = x.size(0);
  const int64_t heads = x.size(nhd ? 2 : 1);
  const int64_t tokens = x.size(nhd ? 1 : 2);
  const int64_t head_dim = x.size(3);
  check_grid_dims(batch, heads, tokens);
  TORCH_CHECK(warp >= 8 && warp <= kMaxSlabRows && warp % 8 == 0,
              "sageattention: warp must be a multiple of 8 in [8, ", kMaxSlabRows, "], got ", warp);
  TORCH_CHECK(block >= warp && block % warp == 0,
              "sageattention: block must be a multiple of warp (", warp, "), got ", block);
  TORCH_CHECK(groups_per_warp == 1 || groups_per_warp == 2 || groups_per_warp == 4 ||
                  groups_per_warp == 8,
              "sageattention: groups_per_warp must be 1, 2, 4 or 8, got ", groups_per_warp);

  check_same_device(x, x_int8, "x_int8");
  TORCH_CHECK(x_int8.scalar_type() == at::kChar, "sageattention: x_int8 must be int8, got ",
              x_int8.scalar_type());
  TORCH_CHECK(x_int8.dim() == 4 && x_int8.size(0) == x.size(0) && x_int8.size(1) == x.size(1) &&
                  x_int8.size(2) == x.size(2) && x_int8.size(3) >= head_dim &&
                  x_int8.size(3) <= kMaxHeadDim,
              "sageattention: x_int8 must have x's shape ", x.sizes(),
              " with a last dim in [", head_dim, ", ", kMaxHeadDim, "], got ", x_int8.sizes());
  TORCH_CHECK(x_int8.stride(3) == 1,
              "sageattention: x_int8 must have a contiguous last dimension");

  const int64_t slabs = (tokens + block - 1) / block * (block / warp);
  check_same_device(x, scale, "scale");
  TORCH_CHECK(scale.scalar_type() == at::kFloat, "sageattention: scale must be float32, got ",
              scale.scalar_type());
  TORCH_CHECK(scale.dim() == 3 && scale.size(0) == batch && scale.size(1) == heads &&
                  scale.size(2) == slabs * groups_per_warp && scale.stride(2) == 1,
              "sageattention: scale must have shape [", batch, ", ", heads, ", ",
              slabs * groups_per_warp,
              "] (ceil(L / block) * (block / warp) * groups_per_warp) with a contiguous last "
              "dimension, got ",
              scale.sizes());
  const MeanArg mean_arg = optional_mean(x, mean, nhd);
  TORCH_CHECK(slabs <= INT32_MAX, "sageattention: too many slabs: ", slabs);
  if (slabs == 0 || batch == 0 || heads == 0) return;

  const c10::cuda::CUDAGuard device_guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(slabs), static_cast<unsigned>(heads),
                  static_cast<unsigned>(batch));
  const TokenStrides x_strides = token_strides(x, nhd);
  const TokenStrides out_strides = token_strides(x_int8, nhd);
  const TokenStrides scale_strides{scale.stride(0), scale.stride(1), 1};
  auto launch = [&](auto* typed_x) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(typed_x)>>;
    QuantPerThreadInt8Kernel<T><<<grid, kPerThreadThreads, 0, stream>>>(
        typed_x, x_int8.data_ptr<int8_t>(), scale.data_ptr<float>(), mean_arg.ptr, x_strides,
        out_strides, scale_strides, mean_arg.strides, static_cast<int>(tokens),
        static_cast<int>(head_dim), static_cast<int>(x_int8.size(3)), static_cast<int>(warp),
        static_cast<int>(groups_per_warp), static_cast<float>(pre_scale));
  };
  if (x.scalar_type() == at::kHalf) {
    launch(reinterpret_cast<const __half*>(x.data_ptr()));
  } else {
    launch(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr()));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace detail
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("quant_per_thread_int8", &sageattention::detail::quant_per_thread_int8);
}
