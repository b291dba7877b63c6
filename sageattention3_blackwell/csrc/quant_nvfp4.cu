// NVFP4 quantization of a float32 [R, N] tensor along its last dim (16-element blocks).
//
// Codes: uint8 [R, N/2] (two E2M1 codes per byte, element 2j in the low nibble); scales: uint8
// [R, N/16] holding E4M3 bits. Bit-identical to sageattn3.nvfp4.quantize_nvfp4 (see nvfp4.cuh).
// The attention front end (sageattn3/_ops.py) feeds it smoothed Q, smoothed K and transposed V.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "nvfp4.cuh"

namespace sageattn3 {
namespace detail {

constexpr int kQuantThreads = 256;

// One thread per 16-element block.
__global__ void __launch_bounds__(kQuantThreads)
    QuantNvfp4Kernel(const float* __restrict__ x, uint8_t* __restrict__ codes, uint8_t* __restrict__ scales,
                     int64_t num_blocks) {
  const int64_t block = static_cast<int64_t>(blockIdx.x) * kQuantThreads + threadIdx.x;
  if (block >= num_blocks) return;
  const float4* src = reinterpret_cast<const float4*>(x + block * nvfp4::kBlock);
  float v[16];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float4 f = src[i];
    v[4 * i] = f.x;
    v[4 * i + 1] = f.y;
    v[4 * i + 2] = f.z;
    v[4 * i + 3] = f.w;
  }
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(v[i]));
  float recip;
  const uint32_t scale = nvfp4::block_scale(amax, &recip);
  float lo[8], hi[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    lo[i] = v[i];
    hi[i] = v[8 + i];
  }
  uint2 packed;
  packed.x = nvfp4::pack8(lo, recip);
  packed.y = nvfp4::pack8(hi, recip);
  reinterpret_cast<uint2*>(codes)[block] = packed;
  scales[block] = static_cast<uint8_t>(scale);
}

}  // namespace detail

void quant_nvfp4(const at::Tensor& x, at::Tensor& codes, at::Tensor& scales) {
  TORCH_CHECK(x.is_cuda() && codes.is_cuda() && scales.is_cuda(), "quant_nvfp4: tensors must be on a CUDA device");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "quant_nvfp4: x must be float32, got ", x.scalar_type());
  TORCH_CHECK(codes.scalar_type() == at::kByte && scales.scalar_type() == at::kByte,
              "quant_nvfp4: codes and scales must be uint8");
  TORCH_CHECK(x.is_contiguous() && codes.is_contiguous() && scales.is_contiguous(),
              "quant_nvfp4: tensors must be contiguous");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) % nvfp4::kBlock == 0,
              "quant_nvfp4: the last dim must be a multiple of 16, got ", x.size(-1));
  const int64_t num_blocks = x.numel() / nvfp4::kBlock;
  TORCH_CHECK(codes.numel() == num_blocks * 8 && scales.numel() == num_blocks,
              "quant_nvfp4: codes must hold numel/2 bytes and scales numel/16 bytes");
  if (num_blocks == 0) return;
  const c10::cuda::CUDAGuard device_guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t grid = (num_blocks + detail::kQuantThreads - 1) / detail::kQuantThreads;
  TORCH_CHECK(grid <= 2147483647LL, "quant_nvfp4: tensor too large");
  detail::QuantNvfp4Kernel<<<static_cast<unsigned>(grid), detail::kQuantThreads, 0, stream>>>(
      x.data_ptr<float>(), codes.data_ptr<uint8_t>(), scales.data_ptr<uint8_t>(), num_blocks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sageattn3

TORCH_LIBRARY_IMPL(sageattn3, CUDA, m) { m.impl("quant_nvfp4", &sageattn3::quant_nvfp4); }
