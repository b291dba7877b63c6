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

// ---- vector access -----------------------------------------------------------------------
//
// The kernels read fp16/bf16 rows in chunks of VEC consecutive channels: VEC = 8 (one 16-byte
// load) when every row start is 16-byte aligned and D is a multiple of 8 (the attention shapes),
// else VEC = 1 (any strides and head dims). The bits are kept as loaded and converted to float
// per element, exactly as to_float() converts one value (fp16/bf16 -> fp32 is exact).

template <int VEC>
struct Bits16 {  // VEC 16-bit values, element i in bits [16 (i % 2), 16 (i % 2) + 16) of word i / 2
  static_assert(VEC == 1 || VEC == 8, "VEC must be 1 or 8");
  uint32_t word[(VEC + 1) / 2];
};

template <int VEC>
__device__ __forceinline__ Bits16<VEC> load_bits(const void* p) {
  Bits16<VEC> bits;
  if constexpr (VEC == 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    bits.word[0] = u.x;
    bits.word[1] = u.y;
    bits.word[2] = u.z;
    bits.word[3] = u.w;
  } else {
    bits.word[0] = *reinterpret_cast<const uint16_t*>(p);
  }
  return bits;
}

template <typename T>
__device__ __forceinline__ float bits_to_float(uint32_t bits);
template <>
__device__ __forceinline__ float bits_to_float<__half>(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}
template <>
__device__ __forceinline__ float bits_to_float<__nv_bfloat16>(uint32_t bits) {
  return __uint_as_float(bits << 16);  // what __bfloat162float computes
}

// Element i of a chunk, as float.
template <typename T, int VEC>
__device__ __forceinline__ float element(const Bits16<VEC>& bits, int i) {
  return bits_to_float<T>((bits.word[i / 2] >> (16 * (i % 2))) & 0xffffu);
}

// Whether a [B, H, L, D] view can be read in 16-byte chunks: start and row strides multiples of
// 16 bytes (8 elements) and D a multiple of 8.
inline bool rows_16b_aligned(const void* ptr, const TokenStrides& strides, int64_t head_dim,
                             int64_t element_size) {
  const int64_t per_16b = 16 / element_size;
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && head_dim % per_16b == 0 &&
         strides.batch % per_16b == 0 && strides.head % per_16b == 0 &&
         strides.token % per_16b == 0;
}

// ---- work descriptions shared by the ops of csrc/fused/ --------------------------------------
//
// Each op turns its (checked) tensors into jobs; one launch runs one or two jobs of the same kind,
// which is how sageattention::quant_mma_operands quantizes Q and K in one launch and takes the K
// mean and the V statistics in another.

// Per-thread / per-warp INT8 of one tensor (quant_per_thread_int8.cu): slabs of `slab_rows`
// tokens, `groups` scales per slab (group of row r: (r mod 8) / (8 / groups)).
struct Int8SlabJob {
  const void* x = nullptr;
  int8_t* out = nullptr;
  float* scale = nullptr;
  const float* mean = nullptr;  // optional [B, H, 1, D] mean subtracted first (K smoothing)
  TokenStrides x_strides{0, 0, 0};
  TokenStrides out_strides{0, 0, 0};
  TokenStrides mean_strides{0, 0, 0};  // batch, head
  TokenStrides scale_strides{0, 0, 0};  // batch, head
  int batch = 0;
  int heads = 0;
  int num_tokens = 0;
  int head_dim = 0;
  int head_dim_out = 0;
  int slab_rows = 0;
  int groups = 0;
  int total_slabs = 0;  // per (batch, head): ceil(L / block) * (block / slab_rows)
  float pre_scale = 1.0f;
  // Filled by the launcher:
  int tile_rows = 0;   // rows per CTA, a multiple of slab_rows
  int tiles = 0;       // CTAs per (batch, head)
  int lanes_per_row = 0;
  int64_t first_cta = 0;
};

// Channel statistics over all tokens of one tensor (quant_v_fp8_operand.cu).
//   kind kMean:   mean[c] = sum_c / L (the K mean of smoothing; mean_over_tokens)
//   kind kVScale: scale[c] = absmax_c * fl(1 / scale_max) (the reciprocal's product, as the
//                 Triton path and the reference compute it), with smoothing (mean != null)
//                 mean[c] = sum_c * fl(1 / L) and absmax of v - mean (the V statistics of
//                 quant_v_fp8_operand)
struct StatsJob {
  enum Kind : int { kMean = 0, kVScale = 1 };
  const void* x = nullptr;
  TokenStrides x_strides{0, 0, 0};
  float* mean = nullptr;
  TokenStrides mean_strides{0, 0, 0};  // batch, head
  float* scale = nullptr;
  TokenStrides scale_strides{0, 0, 0};  // batch, head
  int kind = kMean;
  int batch = 0;
  int heads = 0;
  int num_tokens = 0;
  int head_dim = 0;
  int head_dim_out = 0;  // outputs written for channels < head_dim_out (0 past head_dim)
  float inv_tokens = 0.0f;
  float inv_scale_max = 0.0f;
  // Filled by the launcher:
  int64_t first_unit = 0;
};

// V -> the FP8 operand, once the statistics are known (quant_v_fp8_operand.cu).
struct Fp8OperandJob {
  const void* v = nullptr;
  TokenStrides v_strides{0, 0, 0};
  uint32_t* operand = nullptr;  // [B, H, D_out, L_pad] bytes, written as 4-byte words
  const float* scale = nullptr;  // contiguous [B, H, D_out]
  const float* mean = nullptr;   // contiguous [B, H, 1, D_out] or null
  int batch = 0;
  int heads = 0;
  int num_tokens = 0;
  int padded_tokens = 0;
  int head_dim = 0;
  int head_dim_out = 0;
  float scale_max = 0.0f;
  // Filled by the launcher:
  int tile_words = 0;  // words (4 tokens) per channel per CTA, a multiple of 16
  int tiles = 0;       // CTAs per (batch, head)
};

// Launchers (on the current stream of x's device; the caller holds a device guard). `dtype` is
// the inputs' scalar type (kHalf or kBFloat16); jobs with nothing to do are skipped.
void launch_int8_slabs(Int8SlabJob* jobs, int count, at::ScalarType dtype);
void launch_channel_stats(StatsJob* jobs, int count, at::ScalarType dtype);
void launch_fp8_operand(Fp8OperandJob& job, at::ScalarType dtype);

// Argument checks of each op (TORCH_CHECK with the op's messages), as jobs.
Int8SlabJob per_thread_int8_job(const at::Tensor& x, at::Tensor& x_int8, at::Tensor& scale,
                                const std::optional<at::Tensor>& mean, double pre_scale,
                                int64_t block, int64_t warp, int64_t groups_per_warp, bool nhd);
StatsJob mean_over_tokens_job(const at::Tensor& x, at::Tensor& mean, bool nhd);
// false: nothing to launch (no batch, heads or tokens; with no tokens the outputs are zeroed).
bool v_fp8_operand_jobs(const at::Tensor& v, at::Tensor& v_operand, at::Tensor& v_scale,
                        const std::optional<at::Tensor>& v_mean, double scale_max, bool nhd,
                        StatsJob& stats, Fp8OperandJob& operand);

}  // namespace detail
}  // namespace sageattention
