// V (fp16/bf16) -> the FP8 e4m3 P·V operand of qk_int8_sv_f8_attn, with per-channel scales and
// optional V smoothing, in two kernels and two reads of V; and the channel statistics kernel that
// also gives the K mean of smoothing (mean_over_tokens, quant_mma_operands).
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
// The K mean (StatsJob::kMean) is sum_c / L with an IEEE division, as before.
//
// Summation order (fixed, so every build and launch gives the same bits): tokens are split into
// 8 classes t mod 8; each class is summed in token order in float32, then the 8 class sums are
// added in class order (class 0 first).
//
// Layout of the operand (csrc/torch_bindings.cpp, qk_int8_sv_f8_attn): [B, H, D_out, L_pad],
// tokens contiguous, L_pad = ceil(L / 64) * 64, zeros past L and in channels >= D; inside each
// group of 16 tokens position p holds token FP8_V_TOKEN_PERMUTATION[p] =
// [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15][p] (sageattention/_ops.py), i.e. the
// 4-byte word w of a channel row holds tokens 16 (w / 4) + 2 (w mod 4) + {0, 1, 8, 9}.
//
// Kernels (rows read in chunks of VEC channels: VEC = 8, one 16-byte load, for aligned rows):
//   ChannelStatsKernel     one thread per (chunk, token class): 8 classes x 8 chunks per CTA
//                          (64 threads), kStatsUnroll chunk loads in flight per thread; the class
//                          sums meet in shared memory. One read of each tensor; one launch can
//                          take two tensors (K mean and V statistics).
//   QuantVFp8OperandKernel one thread per (chunk, operand word): loads its 4 tokens' chunks, and
//                          writes one word per channel; lanes take consecutive words, so each
//                          warp store covers 64 contiguous bytes of two channel rows. No shared
//                          memory, no barrier. Second read of V, one write of the operand.
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

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "fused_common.cuh"

namespace sageattention {
namespace detail {

constexpr int kStatsClasses = 8;  // token classes t mod 8 (the summation order above)
constexpr int kStatsUnits = 8;    // (tensor, batch, head, chunk) units per CTA
constexpr int kStatsThreads = kStatsClasses * kStatsUnits;
constexpr int kStatsUnroll = 16;  // chunk loads in flight per thread
constexpr int kTileTokens = 64;   // L_pad granularity of the operand (the attention's key block)
constexpr int kOperandThreads = 256;
constexpr int kOperandItems = 2;  // (chunk, word) items per thread whose loads are issued together
constexpr float kE4M3Max = 448.0f;

// The units of one CTA, all of one job (job1.first_unit is a multiple of kStatsUnits); `job`
// refers to a kernel parameter.
template <typename T, int VEC>
__device__ __forceinline__ void channel_stats_units(const StatsJob& job) {
  __shared__ float part_sum[kStatsClasses - 1][VEC][kStatsUnits];
  __shared__ float part_max[kStatsClasses - 1][VEC][kStatsUnits];
  __shared__ float part_min[kStatsClasses - 1][VEC][kStatsUnits];
  const int slot = threadIdx.x % kStatsUnits;
  const int cls = threadIdx.x / kStatsUnits;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kStatsUnits + slot;

  const int chunks = job.head_dim_out / VEC;
  const int64_t local = unit - job.first_unit;
  const bool active = local < static_cast<int64_t>(job.batch) * job.heads * chunks;
  const int chunk = static_cast<int>(local % chunks);
  const int64_t bh = local / chunks;
  const int64_t head = bh % job.heads;
  const int64_t batch = bh / job.heads;
  const bool with_range = job.kind == StatsJob::kVScale;

  float sum[VEC];
  float vmax[VEC];
  float vmin[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    sum[i] = 0.0f;
    vmax[i] = -INFINITY;
    vmin[i] = INFINITY;
  }
  if (active && chunk < job.head_dim / VEC) {  // chunks past head_dim (padding) read nothing
    const T* column = static_cast<const T*>(job.x) + batch * job.x_strides.batch +
                      head * job.x_strides.head + chunk * VEC;
    const int64_t tokens = job.num_tokens;
    // int64 counters: with num_tokens near INT32_MAX an int `token += 8` would overflow.
    for (int64_t first = cls; first < tokens; first += kStatsClasses * kStatsUnroll) {
      Bits16<VEC> bits[kStatsUnroll];
#pragma unroll
      for (int u = 0; u < kStatsUnroll; ++u) {  // every load of the batch first
        const int64_t token = first + static_cast<int64_t>(u) * kStatsClasses;
        if (token < tokens) bits[u] = load_bits<VEC>(column + token * job.x_strides.token);
      }
#pragma unroll
      for (int u = 0; u < kStatsUnroll; ++u) {  // then the sums, in token order
        if (first + static_cast<int64_t>(u) * kStatsClasses < tokens) {
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float x = element<T, VEC>(bits[u], i);
            sum[i] = __fadd_rn(sum[i], x);
            if (with_range) {
              vmax[i] = fmaxf(vmax[i], x);
              vmin[i] = fminf(vmin[i], x);
            }
          }
        }
      }
    }
  }
  if (cls > 0) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      part_sum[cls - 1][i][slot] = sum[i];
      part_max[cls - 1][i][slot] = vmax[i];
      part_min[cls - 1][i][slot] = vmin[i];
    }
  }
  __syncthreads();
  if (cls != 0 || !active) return;
  // Class 0 adds the other classes' sums in class order. (Its own sum started at +0, so it is
  // never -0 and equals 0 + sum: the same bits as a total started from 0.)
  for (int c = 0; c < kStatsClasses - 1; ++c) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      sum[i] = __fadd_rn(sum[i], part_sum[c][i][slot]);
      vmax[i] = fmaxf(vmax[i], part_max[c][i][slot]);
      vmin[i] = fminf(vmin[i], part_min[c][i][slot]);
    }
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const int channel = chunk * VEC + i;
    if (job.kind == StatsJob::kMean) {  // head_dim_out == head_dim: every channel has data
      job.mean[batch * job.mean_strides.batch + head * job.mean_strides.head + channel] =
          __fdiv_rn(sum[i], static_cast<float>(job.num_tokens));
      continue;
    }
    float channel_scale = 0.0f;  // channels past head_dim: scale (and mean) 0
    float channel_mean = 0.0f;
    if (channel < job.head_dim) {
      float absmax;
      if (job.mean != nullptr) {
        channel_mean = __fmul_rn(sum[i], job.inv_tokens);
        absmax = fmaxf(__fsub_rn(vmax[i], channel_mean), __fsub_rn(channel_mean, vmin[i]));
      } else {
        absmax = fmaxf(vmax[i], -vmin[i]);
      }
      channel_scale = __fmul_rn(absmax, job.inv_scale_max);
    }
    job.scale[batch * job.scale_strides.batch + head * job.scale_strides.head + channel] =
        channel_scale;
    if (job.mean != nullptr) {
      job.mean[batch * job.mean_strides.batch + head * job.mean_strides.head + channel] =
          channel_mean;
    }
  }
}

// grid = ceil(units / kStatsUnits) (1-d), block = kStatsThreads: thread = class * kStatsUnits +
// unit, so a warp reads 8 consecutive chunks (128 contiguous bytes with VEC = 8) of 4 tokens.
// CTAs from job1.first_unit / kStatsUnits on take job1 (first_unit INT64_MAX: single job).
template <typename T, int VEC>
__global__ void __launch_bounds__(kStatsThreads)
    ChannelStatsKernel(const StatsJob job0, const StatsJob job1) {
  if (static_cast<int64_t>(blockIdx.x) * kStatsUnits >= job1.first_unit) {
    channel_stats_units<T, VEC>(job1);
  } else {
    channel_stats_units<T, VEC>(job0);
  }
}

// grid = tiles * H * B (1-d), block = kOperandThreads. A CTA covers `tile_words` words (4 tokens
// each) of every channel row of one (batch, head): item i -> word tile_words * tile + 16 * (i /
// (16 * chunks_out)) + i % 16 of chunk (i / 16) % chunks_out.
template <typename T, int VEC>
__global__ void __launch_bounds__(kOperandThreads) QuantVFp8OperandKernel(const Fp8OperandJob job) {
  const int64_t cta = blockIdx.x;
  const int tile = static_cast<int>(cta % job.tiles);
  const int64_t bh = cta / job.tiles;  // batch * heads + head
  const int64_t head = bh % job.heads;
  const int64_t batch = bh / job.heads;
  const int chunks_in = job.head_dim / VEC;
  const int chunks_out = job.head_dim_out / VEC;
  const int64_t words_per_row = job.padded_tokens / 4;
  const int items = job.tile_words * chunks_out;
  const T* v_bh = static_cast<const T*>(job.v) + batch * job.v_strides.batch + head * job.v_strides.head;
  uint32_t* operand_bh = job.operand + bh * job.head_dim_out * words_per_row;
  const float* scale_bh = job.scale + bh * job.head_dim_out;
  const float* mean_bh = job.mean == nullptr ? nullptr : job.mean + bh * job.head_dim_out;
  const float scale_max = job.scale_max;
  constexpr int kTokenOffsets[4] = {0, 1, 8, 9};  // byte s of a word: token 16 g + 2 j + offset

  for (int first = 0; first < items; first += kOperandThreads * kOperandItems) {
    Bits16<VEC> bits[kOperandItems][4];
    int chunk[kOperandItems];
    int64_t word[kOperandItems];
    bool valid[kOperandItems];
#pragma unroll
    for (int it = 0; it < kOperandItems; ++it) {  // every load of the round first
      const int i = first + it * kOperandThreads + static_cast<int>(threadIdx.x);
      const int rest = i / 16;
      chunk[it] = rest % chunks_out;
      word[it] = static_cast<int64_t>(tile) * job.tile_words + (rest / chunks_out) * 16 + i % 16;
      valid[it] = i < items && word[it] < words_per_row;
      const int64_t token0 = 16 * (word[it] / 4) + 2 * (word[it] % 4);
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const int64_t token = token0 + kTokenOffsets[s];
        bits[it][s] = Bits16<VEC>{};
        if (valid[it] && chunk[it] < chunks_in && token < job.num_tokens) {
          bits[it][s] = load_bits<VEC>(v_bh + token * job.v_strides.token + chunk[it] * VEC);
        }
      }
    }
#pragma unroll
    for (int it = 0; it < kOperandItems; ++it) {
      if (!valid[it]) continue;
      const int64_t token0 = 16 * (word[it] / 4) + 2 * (word[it] % 4);
      bool present[4];  // tokens past L are padding: zero bytes
#pragma unroll
      for (int t = 0; t < 4; ++t) present[t] = token0 + kTokenOffsets[t] < job.num_tokens;
      const bool has_data = chunk[it] < chunks_in;  // else head-dim padding: zero bytes
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const int c = chunk[it] * VEC + i;
        uint32_t packed = 0;
        if (has_data) {
          const float s = scale_bh[c];
          // Dividing by 1 where the scale is 0 is what the Triton path does (the values are
          // then 0, or tiny enough that e4m3 rounds them to 0).
          const float divisor = s > 0.0f ? s : 1.0f;
          float x[4];
#pragma unroll
          for (int t = 0; t < 4; ++t) x[t] = element<T, VEC>(bits[it][t], i);
          if (mean_bh != nullptr) {
            const float mean = mean_bh[c];
#pragma unroll
            for (int t = 0; t < 4; ++t) x[t] = __fsub_rn(x[t], mean);
          }
#pragma unroll
          for (int t = 0; t < 4; ++t) {
            if (present[t]) {
              const float y = fminf(fmaxf(__fdiv_rn(x[t], divisor), -scale_max), scale_max);
              const __nv_fp8_storage_t byte = __nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
              packed |= static_cast<uint32_t>(byte) << (8 * t);
            }
          }
        }
        operand_bh[c * words_per_row + word[it]] = packed;
      }
    }
  }
}

// ---- host side ----------------------------------------------------------------------------

inline bool stats_job_vec8(const StatsJob& job) {
  return rows_16b_aligned(job.x, job.x_strides, job.head_dim, 2) && job.head_dim_out % 8 == 0;
}

void launch_channel_stats(StatsJob* jobs, int count, at::ScalarType dtype) {
  TORCH_CHECK(count >= 1 && count <= 2, "sageattention: launch_channel_stats takes 1 or 2 jobs");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // One chunk width for the launch: 16-byte chunks only when every job allows them.
  bool vec8 = true;
  for (int j = 0; j < count; ++j) vec8 = vec8 && stats_job_vec8(jobs[j]);
  const int vec = vec8 ? 8 : 1;
  int64_t units[2] = {0, 0};
  for (int j = 0; j < count; ++j) {
    units[j] = static_cast<int64_t>(jobs[j].batch) * jobs[j].heads * (jobs[j].head_dim_out / vec);
  }
  StatsJob job0 = jobs[0];
  job0.first_unit = 0;
  StatsJob job1 = count == 2 ? jobs[1] : jobs[0];
  // job1 starts at a CTA boundary, so every CTA (and its barrier) serves one job.
  const int64_t units0 = count == 2 ? (units[0] + kStatsUnits - 1) / kStatsUnits * kStatsUnits : units[0];
  job1.first_unit = count == 2 ? units0 : std::numeric_limits<int64_t>::max();
  const int64_t total = units0 + units[1];
  if (total == 0) return;
  const int64_t ctas = (total + kStatsUnits - 1) / kStatsUnits;
  TORCH_CHECK(ctas <= INT32_MAX, "sageattention: too many channels: ", total);
  const dim3 grid(static_cast<unsigned>(ctas));
  if (dtype == at::kHalf) {
    if (vec8) {
      ChannelStatsKernel<__half, 8><<<grid, kStatsThreads, 0, stream>>>(job0, job1);
    } else {
      ChannelStatsKernel<__half, 1><<<grid, kStatsThreads, 0, stream>>>(job0, job1);
    }
  } else {
    if (vec8) {
      ChannelStatsKernel<__nv_bfloat16, 8><<<grid, kStatsThreads, 0, stream>>>(job0, job1);
    } else {
      ChannelStatsKernel<__nv_bfloat16, 1><<<grid, kStatsThreads, 0, stream>>>(job0, job1);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_fp8_operand(Fp8OperandJob& job, at::ScalarType dtype) {
  if (job.batch == 0 || job.heads == 0 || job.padded_tokens == 0) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vec8 = rows_16b_aligned(job.v, job.v_strides, job.head_dim, 2) && job.head_dim_out % 8 == 0;
  const int chunks_out = job.head_dim_out / (vec8 ? 8 : 1);
  const int words_per_row = job.padded_tokens / 4;  // a multiple of 16
  // About kOperandItems items per thread, in whole 16-word (64-token) steps, within the row.
  int tile_words = 16 * std::max(1, kOperandThreads * kOperandItems / (16 * chunks_out));
  tile_words = std::min(tile_words, words_per_row);
  job.tile_words = tile_words;
  job.tiles = (words_per_row + tile_words - 1) / tile_words;
  const int64_t ctas = static_cast<int64_t>(job.tiles) * job.heads * job.batch;
  TORCH_CHECK(ctas <= INT32_MAX, "sageattention: V too large for one launch: ", ctas, " tiles");
  const dim3 grid(static_cast<unsigned>(ctas));
  if (dtype == at::kHalf) {
    if (vec8) {
      QuantVFp8OperandKernel<__half, 8><<<grid, kOperandThreads, 0, stream>>>(job);
    } else {
      QuantVFp8OperandKernel<__half, 1><<<grid, kOperandThreads, 0, stream>>>(job);
    }
  } else {
    if (vec8) {
      QuantVFp8OperandKernel<__nv_bfloat16, 8><<<grid, kOperandThreads, 0, stream>>>(job);
    } else {
      QuantVFp8OperandKernel<__nv_bfloat16, 1><<<grid, kOperandThreads, 0, stream>>>(job);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool v_fp8_operand_jobs(const at::Tensor& v, at::Tensor& v_operand, at::Tensor& v_scale,
                        const std::optional<at::Tensor>& v_mean, double scale_max, bool nhd,
                        StatsJob& stats, Fp8OperandJob& operand) {
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
  if (batch == 0 || heads == 0) return false;
  if (tokens == 0) {  // no tokens: no operand columns; scale (and mean) 0, like the Triton path
    v_scale.zero_();
    if (v_mean.has_value()) v_mean->zero_();
    return false;
  }

  stats = StatsJob{};
  stats.kind = StatsJob::kVScale;
  stats.x = v.data_ptr();
  stats.x_strides = token_strides(v, nhd);
  stats.scale = v_scale.data_ptr<float>();
  stats.scale_strides = TokenStrides{v_scale.stride(0), v_scale.stride(1), 0};
  stats.mean = mean_ptr;
  stats.mean_strides = TokenStrides{heads * head_dim_out, head_dim_out, 0};  // contiguous
  stats.batch = static_cast<int>(batch);
  stats.heads = static_cast<int>(heads);
  stats.num_tokens = static_cast<int>(tokens);
  stats.head_dim = static_cast<int>(head_dim);
  stats.head_dim_out = static_cast<int>(head_dim_out);
  // The float32 reciprocals PyTorch multiplies by when the Triton path divides by a Python number.
  stats.inv_tokens = 1.0f / static_cast<float>(tokens);
  stats.inv_scale_max = 1.0f / static_cast<float>(scale_max);

  operand = Fp8OperandJob{};
  operand.v = v.data_ptr();
  operand.v_strides = stats.x_strides;
  operand.operand = reinterpret_cast<uint32_t*>(v_operand.data_ptr());
  operand.scale = v_scale.data_ptr<float>();
  operand.mean = mean_ptr;
  operand.batch = stats.batch;
  operand.heads = stats.heads;
  operand.num_tokens = stats.num_tokens;
  operand.padded_tokens = static_cast<int>(padded);
  operand.head_dim = stats.head_dim;
  operand.head_dim_out = stats.head_dim_out;
  operand.scale_max = static_cast<float>(scale_max);
  return true;
}

void quant_v_fp8_operand(const at::Tensor& v, at::Tensor& v_operand, at::Tensor& v_scale,
                         const std::optional<at::Tensor>& v_mean, double scale_max,
                         const std::string& tensor_layout) {
  const bool nhd = is_nhd(tensor_layout);
  StatsJob stats;
  Fp8OperandJob operand;
  if (!v_fp8_operand_jobs(v, v_operand, v_scale, v_mean, scale_max, nhd, stats, operand)) return;
  const c10::cuda::CUDAGuard device_guard(v.device());
  launch_channel_stats(&stats, 1, v.scalar_type());
  launch_fp8_operand(operand, v.scalar_type());
}

}  // namespace detail
}  // namespace sageattention

TORCH_LIBRARY_IMPL(sageattention, CUDA, m) {
  m.impl("quant_v_fp8_operand", &sageattention::detail::quant_v_fp8_operand);
}
