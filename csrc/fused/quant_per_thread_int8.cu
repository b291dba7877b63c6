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
// Kernel (QuantInt8SlabsKernel): one CTA of 256 threads per tile of whole slabs of one (batch,
// head). A row is read by `lanes_per_row` lanes (a power of two), each taking a chunk of VEC
// channels: VEC = 8 (one 16-byte load) for aligned rows, else 1. Three steps, two barriers:
//   1. absmax of each row (lane max, then a shuffle reduction over the row's lanes) -> shared;
//   2. one thread per group: the max over its rows, the scale (-> shared and global);
//   3. quantize, one 8-byte store per chunk (VEC = 8).
// "Resident" tiles (VEC = 8, at most kResidentPasses rows per thread) keep the loaded chunks in
// registers between steps 1 and 3 and issue all loads of a thread before using any: x is read
// from global memory once, with up to 8 x 16 bytes in flight per thread. Other shapes re-read
// their rows in step 3 (the previous kernel's scheme; those reads hit L1/L2). A launch can run
// two tensors (Q and K: sageattention::quant_mma_operands), each CTA taking one tile of one.
//
// Schema in csrc/torch_bindings.cpp; the CUDA implementation is registered at the bottom.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "fused_common.cuh"

namespace sageattention {
namespace detail {

constexpr int kSlabThreads = 256;
constexpr int kSlabWarps = kSlabThreads / 32;
constexpr int kMaxSlabRows = 1024;
constexpr int kMaxTileRows = 1024;   // shared row maxima per CTA
constexpr int kResidentPasses = 8;   // chunks a thread holds in registers (8 x 16 bytes)

__device__ __forceinline__ float max_over_row_lanes(float v, int lanes_per_row) {
  // xor offsets below lanes_per_row stay inside the aligned group of lanes of one row.
  for (int offset = lanes_per_row / 2; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

template <int VEC>
__device__ __forceinline__ void store_int8(int8_t* dst, const int8_t (&q)[VEC]) {
  if constexpr (VEC == 8) {
    uint32_t lo = 0;
    uint32_t hi = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      lo |= static_cast<uint32_t>(static_cast<uint8_t>(q[i])) << (8 * i);
      hi |= static_cast<uint32_t>(static_cast<uint8_t>(q[i + 4])) << (8 * i);
    }
    *reinterpret_cast<uint2*>(dst) = make_uint2(lo, hi);
  } else {
    *dst = q[0];
  }
}

// y = (x - mean) * pre_scale for the VEC values of one chunk (the mean subtracted only with
// has_mean), every step rounded to nearest as in the reference.
template <typename T, int VEC>
__device__ __forceinline__ void transform_chunk(const Bits16<VEC>& bits, bool has_mean,
                                                const float (&mean)[VEC], float pre_scale,
                                                float (&y)[VEC]) {
#pragma unroll
  for (int i = 0; i < VEC; ++i) y[i] = element<T, VEC>(bits, i);
  if (has_mean) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) y[i] = __fsub_rn(y[i], mean[i]);
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) y[i] = __fmul_rn(y[i], pre_scale);
}

// One tile of one job (the body of QuantInt8SlabsKernel; `job` refers to a kernel parameter, so
// its fields stay in the constant bank instead of registers).
template <typename T, int VEC, bool RESIDENT>
__device__ __forceinline__ void quant_int8_tile(const Int8SlabJob& job) {
  // Step 1 writes each row's absmax here; step 2 replaces it with the row's divisor (its
  // group's scale, or 1 where that is 0). A group's rows are touched by its thread only.
  __shared__ float row_value[kMaxTileRows];

  const int64_t cta = static_cast<int64_t>(blockIdx.x) - job.first_cta;
  const int tile = static_cast<int>(cta % job.tiles);
  const int64_t bh = cta / job.tiles;
  const int64_t head = bh % job.heads;
  const int64_t batch = bh / job.heads;
  const int64_t first_row = static_cast<int64_t>(tile) * job.tile_rows;  // token of tile row 0
  // Rows of this tile that exist (padding tiles past L have none).
  const int64_t rows_left = job.num_tokens - first_row;
  const int rows_valid = rows_left <= 0 ? 0 : static_cast<int>(rows_left < job.tile_rows ? rows_left : job.tile_rows);

  const T* x_tile = static_cast<const T*>(job.x) + batch * job.x_strides.batch +
                    head * job.x_strides.head + first_row * job.x_strides.token;
  int8_t* out_tile = job.out + batch * job.out_strides.batch + head * job.out_strides.head +
                     first_row * job.out_strides.token;
  const float* mean_row = job.mean == nullptr
                              ? nullptr
                              : job.mean + batch * job.mean_strides.batch + head * job.mean_strides.head;

  const int lane = threadIdx.x % 32;
  const int lanes_per_row = job.lanes_per_row;
  const int rows_per_warp = 32 / lanes_per_row;
  const int rows_per_pass = kSlabWarps * rows_per_warp;
  const int row_in_pass = static_cast<int>(threadIdx.x / 32) * rows_per_warp + lane / lanes_per_row;
  const int col = lane % lanes_per_row;  // this thread's first chunk of a row
  const int chunks_in = job.head_dim / VEC;
  const int chunks_out = job.head_dim_out / VEC;
  const int passes = (job.tile_rows + rows_per_pass - 1) / rows_per_pass;
  const float pre_scale = job.pre_scale;

  // Step 2, shared by both schemes: group absmax over its rows, scale to global, divisor to its
  // rows. Group (slab, sub) has rows slab * slab_rows + 8 * octet + sub * (8 / G) + r.
  auto group_scales = [&]() {
    const int slabs_in_tile = job.tile_rows / job.slab_rows;
    const int groups = job.groups;
    const int rows_per_run = 8 / groups;  // adjacent rows of one group inside a row octet
    for (int g = threadIdx.x; g < slabs_in_tile * groups; g += kSlabThreads) {
      const int slab = g / groups;
      const int sub = g % groups;
      float* first = row_value + slab * job.slab_rows + sub * rows_per_run;
      float absmax = 0.0f;
#pragma unroll 4
      for (int octet = 0; octet < job.slab_rows / 8; ++octet) {
        for (int r = 0; r < rows_per_run; ++r) absmax = fmaxf(absmax, first[octet * 8 + r]);
      }
      const float s = __fdiv_rn(absmax, 127.0f);
      const int64_t slab_global = static_cast<int64_t>(tile) * slabs_in_tile + slab;
      if (slab_global < job.total_slabs) {
        job.scale[batch * job.scale_strides.batch + head * job.scale_strides.head +
                  slab_global * groups + sub] = s;
      }
      // Dividing by 1 where the scale is 0 (it can underflow for tiny nonzero values) is what
      // the reference does; it then rounds those values to 0.
      const float divisor = s > 0.0f ? s : 1.0f;
#pragma unroll 4
      for (int octet = 0; octet < job.slab_rows / 8; ++octet) {
        for (int r = 0; r < rows_per_run; ++r) first[octet * 8 + r] = divisor;
      }
    }
  };

  if constexpr (RESIDENT) {
    // chunks_out <= lanes_per_row: one chunk per row per thread, `col`; at most
    // kResidentPasses rows per thread.
    const bool has_chunk = col < chunks_in;
    float mean_c[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      mean_c[i] = (mean_row != nullptr && has_chunk) ? mean_row[col * VEC + i] : 0.0f;
    }

    Bits16<VEC> chunk[kResidentPasses];
#pragma unroll
    for (int p = 0; p < kResidentPasses; ++p) {  // every load first: 8 x 16 bytes in flight
      const int row = p * rows_per_pass + row_in_pass;
      chunk[p] = Bits16<VEC>{};
      if (p < passes && has_chunk && row < rows_valid) {
        chunk[p] = load_bits<VEC>(x_tile + row * job.x_strides.token + col * VEC);
      }
    }
#pragma unroll
    for (int p = 0; p < kResidentPasses; ++p) {
      if (p < passes) {  // uniform over the CTA: the shuffles see every lane
        const int row = p * rows_per_pass + row_in_pass;
        float absmax = 0.0f;
        if (has_chunk && row < rows_valid) {
          float y[VEC];
          transform_chunk<T, VEC>(chunk[p], mean_row != nullptr, mean_c, pre_scale, y);
#pragma unroll
          for (int i = 0; i < VEC; ++i) absmax = fmaxf(absmax, fabsf(y[i]));
        }
        absmax = max_over_row_lanes(absmax, lanes_per_row);
        if (col == 0 && row < job.tile_rows) row_value[row] = absmax;
      }
    }
    __syncthreads();
    group_scales();
    __syncthreads();
#pragma unroll
    for (int p = 0; p < kResidentPasses; ++p) {
      const int row = p * rows_per_pass + row_in_pass;
      if (p < passes && row < rows_valid && col < chunks_out) {
        const float divisor = row_value[row];
        int8_t q[VEC];
        if (has_chunk) {
          float y[VEC];
          transform_chunk<T, VEC>(chunk[p], mean_row != nullptr, mean_c, pre_scale, y);
#pragma unroll
          for (int i = 0; i < VEC; ++i) q[i] = round_to_int8(__fdiv_rn(y[i], divisor));
        } else {
#pragma unroll
          for (int i = 0; i < VEC; ++i) q[i] = 0;  // head-dim padding
        }
        store_int8<VEC>(out_tile + row * job.out_strides.token + col * VEC, q);
      }
    }
  } else {
    auto chunk_mean = [&](int c, float (&m)[VEC]) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) m[i] = mean_row != nullptr ? mean_row[c * VEC + i] : 0.0f;
    };
    for (int p = 0; p < passes; ++p) {
      const int row = p * rows_per_pass + row_in_pass;
      float absmax = 0.0f;
      if (row < rows_valid) {
        const T* x_row = x_tile + row * job.x_strides.token;
        for (int c = col; c < chunks_in; c += lanes_per_row) {
          float m[VEC];
          float y[VEC];
          chunk_mean(c, m);
          transform_chunk<T, VEC>(load_bits<VEC>(x_row + c * VEC), mean_row != nullptr, m, pre_scale, y);
#pragma unroll
          for (int i = 0; i < VEC; ++i) absmax = fmaxf(absmax, fabsf(y[i]));
        }
      }
      absmax = max_over_row_lanes(absmax, lanes_per_row);
      if (col == 0 && row < job.tile_rows) row_value[row] = absmax;
    }
    __syncthreads();
    group_scales();
    __syncthreads();
    for (int p = 0; p < passes; ++p) {
      const int row = p * rows_per_pass + row_in_pass;
      if (row >= rows_valid) continue;
      const float divisor = row_value[row];
      const T* x_row = x_tile + row * job.x_strides.token;
      int8_t* out_row = out_tile + row * job.out_strides.token;
      for (int c = col; c < chunks_out; c += lanes_per_row) {
        int8_t q[VEC];
        if (c < chunks_in) {
          float m[VEC];
          float y[VEC];
          chunk_mean(c, m);
          transform_chunk<T, VEC>(load_bits<VEC>(x_row + c * VEC), mean_row != nullptr, m, pre_scale, y);
#pragma unroll
          for (int i = 0; i < VEC; ++i) q[i] = round_to_int8(__fdiv_rn(y[i], divisor));
        } else {
#pragma unroll
          for (int i = 0; i < VEC; ++i) q[i] = 0;  // head-dim padding
        }
        store_int8<VEC>(out_row + c * VEC, q);
      }
    }
  }
}

// grid = sum over jobs of tiles * H * B (1-d), block = kSlabThreads. job1 is used by the CTAs
// from job1.first_cta on (single-job launches pass first_cta = INT64_MAX).
template <typename T, int VEC, bool RESIDENT>
__global__ void __launch_bounds__(kSlabThreads, 3)
    QuantInt8SlabsKernel(const Int8SlabJob job0, const Int8SlabJob job1) {
  if (static_cast<int64_t>(blockIdx.x) >= job1.first_cta) {
    quant_int8_tile<T, VEC, RESIDENT>(job1);
  } else {
    quant_int8_tile<T, VEC, RESIDENT>(job0);
  }
}

// ---- host side ----------------------------------------------------------------------------

struct SlabPlan {
  int vec = 1;
  bool resident = false;
  bool operator==(const SlabPlan& other) const {
    return vec == other.vec && resident == other.resident;
  }
};

inline int next_pow2(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Chooses the chunk width and tile of one job; returns its CTA count (0: nothing to do).
int64_t plan_int8_job(Int8SlabJob& job, SlabPlan& plan, int64_t element_size) {
  if (job.batch == 0 || job.heads == 0 || job.total_slabs == 0) return 0;
  const bool vec8 = rows_16b_aligned(job.x, job.x_strides, job.head_dim, element_size) &&
                    job.head_dim_out % 8 == 0 && reinterpret_cast<uintptr_t>(job.out) % 8 == 0 &&
                    job.out_strides.batch % 8 == 0 && job.out_strides.head % 8 == 0 &&
                    job.out_strides.token % 8 == 0;
  plan.vec = vec8 ? 8 : 1;
  const int chunks_out = job.head_dim_out / plan.vec;
  job.lanes_per_row = std::min(32, next_pow2(chunks_out));
  const int rows_per_pass = kSlabWarps * (32 / job.lanes_per_row);
  // Resident: one chunk per row per thread (VEC = 8: chunks_out <= 32 <= lanes_per_row) and at
  // least one whole slab within kResidentPasses rows per thread.
  plan.resident = vec8 && job.slab_rows <= kResidentPasses * rows_per_pass;
  int slabs_per_tile = 1;
  if (plan.resident) {
    const int rows = std::min(kResidentPasses * rows_per_pass, kMaxTileRows);
    slabs_per_tile = std::min(rows / job.slab_rows, job.total_slabs);
  }
  job.tile_rows = slabs_per_tile * job.slab_rows;
  job.tiles = (job.total_slabs + slabs_per_tile - 1) / slabs_per_tile;
  return static_cast<int64_t>(job.tiles) * job.heads * job.batch;
}

template <typename T>
void launch_int8_group(const Int8SlabJob& job0, const Int8SlabJob& job1, int64_t ctas,
                              const SlabPlan& plan, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ctas));
  if (plan.vec == 8 && plan.resident) {
    QuantInt8SlabsKernel<T, 8, true><<<grid, kSlabThreads, 0, stream>>>(job0, job1);
  } else if (plan.vec == 8) {
    QuantInt8SlabsKernel<T, 8, false><<<grid, kSlabThreads, 0, stream>>>(job0, job1);
  } else {
    QuantInt8SlabsKernel<T, 1, false><<<grid, kSlabThreads, 0, stream>>>(job0, job1);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_int8_slabs(Int8SlabJob* jobs, int count, at::ScalarType dtype) {
  TORCH_CHECK(count >= 1 && count <= 2, "sageattention: launch_int8_slabs takes 1 or 2 jobs");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  SlabPlan plans[2];
  int64_t ctas[2] = {0, 0};
  for (int j = 0; j < count; ++j) ctas[j] = plan_int8_job(jobs[j], plans[j], 2);
  // job1 == nullptr: a single-job launch (its second job is never selected).
  auto launch = [&](Int8SlabJob job0, int64_t n0, const Int8SlabJob* job1, int64_t n1,
                    const SlabPlan& plan) {
    job0.first_cta = 0;
    Int8SlabJob second = job1 != nullptr ? *job1 : job0;
    second.first_cta = job1 != nullptr ? n0 : std::numeric_limits<int64_t>::max();
    const int64_t total = n0 + n1;
    TORCH_CHECK(total <= INT32_MAX, "sageattention: too many tiles to quantize: ", total);
    if (dtype == at::kHalf) {
      launch_int8_group<__half>(job0, second, total, plan, stream);
    } else {
      launch_int8_group<__nv_bfloat16>(job0, second, total, plan, stream);
    }
  };
  if (count == 2 && ctas[0] > 0 && ctas[1] > 0 && plans[0] == plans[1]) {
    launch(jobs[0], ctas[0], &jobs[1], ctas[1], plans[0]);  // one launch for both tensors
    return;
  }
  for (int j = 0; j < count; ++j) {
    if (ctas[j] > 0) launch(jobs[j], ctas[j], nullptr, 0, plans[j]);
  }
}

Int8SlabJob per_thread_int8_job(const at::Tensor& x, at::Tensor& x_int8, at::Tensor& scale,
                                const std::optional<at::Tensor>& mean, double pre_scale,
                                int64_t block, int64_t warp, int64_t groups_per_warp, bool nhd) {
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

  Int8SlabJob job;
  job.x = x.data_ptr();
  job.out = x_int8.data_ptr<int8_t>();
  job.scale = scale.data_ptr<float>();
  job.mean = mean_arg.ptr;
  job.x_strides = token_strides(x, nhd);
  job.out_strides = token_strides(x_int8, nhd);
  job.mean_strides = mean_arg.strides;
  job.scale_strides = TokenStrides{scale.stride(0), scale.stride(1), 1};
  job.batch = static_cast<int>(batch);
  job.heads = static_cast<int>(heads);
  job.num_tokens = static_cast<int>(tokens);
  job.head_dim = static_cast<int>(head_dim);
  job.head_dim_out = static_cast<int>(x_int8.size(3));
  job.slab_rows = static_cast<int>(warp);
  job.groups = static_cast<int>(groups_per_warp);
  job.total_slabs = static_cast<int>(slabs);
  job.pre_scale = static_cast<float>(pre_scale);
  return job;
}

void quant_per_thread_int8(const at::Tensor& x, at::Tensor& x_int8, at::Tensor& scale,
                           const std::optional<at::Tensor>& mean, double pre_scale, int64_t block,
                           int64_t warp, int64_t groups_per_warp,
                           const std::string& tensor_layout) {
  const bool nhd = is_nhd(tensor_layout);
  Int8SlabJob job = per_thread_int8_job(x, x_int8, scale, mean, pre_scale, block, warp,
                                        groups_per_warp, nhd);
  const c10::cuda::CUDAGuard device_guard(x.device());
  launch_int8_slabs(&job, 1, x.scalar_type());
}

}  // namespace detail
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("quant_per_thread_int8", &sageattention::detail::quant_per_thread_int8);
}
