// Host-side argument checks shared by the INT8 Q·Kᵀ attention launchers
// (qk_int8_sv_f16_attn_sm80.cu, qk_int8_sv_f8_attn_sm89.cu). Every problem is a TORCH_CHECK
// naming the argument; nothing reaches the kernel that could make it read out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "qk_int8_attn_params.h"

namespace sageattention {
namespace qattn {

constexpr int64_t kMaxGridYZ = 65535;

struct Dims {
  bool nhd;
  int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;
};

inline bool parse_layout(const std::string& tensor_layout) {
  TORCH_CHECK(tensor_layout == "HND" || tensor_layout == "NHD",
              "sageattention: tensor_layout must be 'HND' or 'NHD', got '", tensor_layout, "'");
  return tensor_layout == "NHD";
}

// [batch, head, token] element strides of a 4-d tensor in `nhd` or HND layout.
inline void token_strides(const at::Tensor& t, bool nhd, int64_t (&out)[3]) {
  out[0] = t.stride(0);
  out[1] = t.stride(nhd ? 2 : 1);
  out[2] = t.stride(nhd ? 1 : 2);
}

inline void check_cuda_on(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK(t.is_cuda(), "sageattention: ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == ref.device(), "sageattention: ", name, " must be on ", ref.device(),
              " like q, got ", t.device());
}

inline void check_dtype(const at::Tensor& t, at::ScalarType want, const char* name) {
  TORCH_CHECK(t.scalar_type() == want, "sageattention: ", name, " must be ", want, ", got ", t.scalar_type());
}

// 16-byte aligned start and token stride: every row is copied with 16-byte cp.async.
inline void check_rows_16b(const at::Tensor& t, int64_t token_stride, const char* name) {
  const int64_t bytes = t.element_size();
  TORCH_CHECK(t.stride(-1) == 1, "sageattention: ", name, " must have a contiguous last dimension, got stride ",
              t.stride(-1));
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && (token_stride * bytes) % 16 == 0 &&
                  (t.stride(0) * bytes) % 16 == 0 && (t.stride(1) * bytes) % 16 == 0 &&
                  (t.stride(2) * bytes) % 16 == 0,
              "sageattention: ", name, " must be 16-byte aligned with strides that are multiples of 16 bytes ",
              "(got strides ", t.strides(), "); call .contiguous() first");
}

inline void check_shape(const at::Tensor& t, at::IntArrayRef want, const char* name, const char* what) {
  TORCH_CHECK(t.sizes() == want, "sageattention: ", name, " must have shape ", want, " (", what, "), got ",
              t.sizes());
}

// Validates q, k (int8) and returns the problem sizes.
inline Dims check_qk(const at::Tensor& q, const at::Tensor& k, bool nhd) {
  TORCH_CHECK(q.is_cuda(), "sageattention: q must be a CUDA tensor, got device ", q.device());
  check_cuda_on(k, q, "k");
  check_dtype(q, at::kChar, "q");
  check_dtype(k, at::kChar, "k");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4, "sageattention: q and k must be 4-d, got ", q.dim(), " and ",
              k.dim(), " dims");
  Dims d;
  d.nhd = nhd;
  d.batch = q.size(0);
  d.heads_q = q.size(nhd ? 2 : 1);
  d.len_q = q.size(nhd ? 1 : 2);
  d.heads_kv = k.size(nhd ? 2 : 1);
  d.len_k = k.size(nhd ? 1 : 2);
  d.head_dim = q.size(3);
  TORCH_CHECK(d.head_dim == 64 || d.head_dim == 128,
              "sageattention: head dim must be 64 or 128 (pad smaller ones), got ", d.head_dim);
  TORCH_CHECK(k.size(0) == d.batch && k.size(3) == d.head_dim, "sageattention: k must have q's batch (",
              d.batch, ") and head dim (", d.head_dim, "), got shape ", k.sizes());
  TORCH_CHECK(d.heads_kv > 0 && d.heads_q % d.heads_kv == 0, "sageattention: query heads (", d.heads_q,
              ") must be a multiple of key/value heads (", d.heads_kv, ")");
  TORCH_CHECK(d.heads_q <= kMaxGridYZ && d.batch <= kMaxGridYZ, "sageattention: at most ", kMaxGridYZ,
              " heads and batch entries, got ", d.heads_q, " and ", d.batch);
  TORCH_CHECK(d.len_q < (int64_t{1} << 30) && d.len_k < (int64_t{1} << 30), "sageattention: sequences too long");
  TORCH_CHECK(d.len_k > 0 || d.len_q == 0, "sageattention: k has no tokens (L_k = 0)");
  int64_t s[3];
  token_strides(q, nhd, s);
  check_rows_16b(q, s[2], "q");
  token_strides(k, nhd, s);
  check_rows_16b(k, s[2], "k");
  return d;
}

inline void parse_granularity(const std::string& gran, int& q_groups, int& k_groups) {
  TORCH_CHECK(gran == "per_thread" || gran == "per_warp",
              "sageattention: qk_quant_gran must be 'per_thread' or 'per_warp', got '", gran, "'");
  q_groups = gran == "per_thread" ? 8 : 1;
  k_groups = gran == "per_thread" ? 4 : 1;
}

// Fills everything of AttnParams except v / v_scale; checks o, scales and lse.
inline AttnParams make_params(const at::Tensor& q, const at::Tensor& k, at::Tensor& o, const at::Tensor& q_scale,
                              const at::Tensor& k_scale, const std::optional<at::Tensor>& lse, const Dims& d,
                              bool is_causal, const std::string& gran, double qk_scale) {
  AttnParams p{};
  parse_granularity(gran, p.q_groups, p.k_groups);
  check_cuda_on(o, q, "o");
  TORCH_CHECK(o.scalar_type() == at::kHalf || o.scalar_type() == at::kBFloat16,
              "sageattention: o must be float16 or bfloat16, got ", o.scalar_type());
  check_shape(o, q.sizes(), "o", "q's shape");
  TORCH_CHECK(o.stride(3) == 1 && reinterpret_cast<uintptr_t>(o.data_ptr()) % 4 == 0 && o.stride(0) % 2 == 0 &&
                  o.stride(1) % 2 == 0 && o.stride(2) % 2 == 0,
              "sageattention: o must have a contiguous last dimension, 4-byte alignment and even strides");
  const int64_t q_blocks = (d.len_q + kCtaQ - 1) / kCtaQ;
  const int64_t k_blocks = (d.len_k + kCtaK - 1) / kCtaK;
  check_cuda_on(q_scale, q, "q_scale");
  check_dtype(q_scale, at::kFloat, "q_scale");
  check_shape(q_scale, {d.batch, d.heads_q, q_blocks * kWarps * p.q_groups}, "q_scale",
              "[B, H_q, ceil(L_q / 128) * 8 * groups]: 16-row slabs, 8 groups per slab per_thread");
  TORCH_CHECK(q_scale.stride(2) == 1, "sageattention: q_scale must have a contiguous last dimension");
  check_cuda_on(k_scale, q, "k_scale");
  check_dtype(k_scale, at::kFloat, "k_scale");
  check_shape(k_scale, {d.batch, d.heads_kv, k_blocks * p.k_groups}, "k_scale",
              "[B, H_kv, ceil(L_k / 64) * groups]: 4 groups per 64-key block per_thread");
  TORCH_CHECK(k_scale.stride(2) == 1, "sageattention: k_scale must have a contiguous last dimension");
  if (lse.has_value()) {
    check_cuda_on(*lse, q, "lse");
    check_dtype(*lse, at::kFloat, "lse");
    check_shape(*lse, {d.batch, d.heads_q, d.len_q}, "lse", "[B, H_q, L_q]");
    TORCH_CHECK(lse->stride(2) == 1, "sageattention: lse must have a contiguous last dimension");
    p.lse = lse->data_ptr<float>();
    p.lse_stride[0] = lse->stride(0);
    p.lse_stride[1] = lse->stride(1);
  }
  TORCH_CHECK(std::isfinite(qk_scale) && qk_scale > 0, "sageattention: qk_scale must be positive and finite, got ",
              qk_scale);
  p.q = q.data_ptr<int8_t>();
  p.k = k.data_ptr<int8_t>();
  p.o = o.data_ptr();
  p.q_scale = q_scale.data_ptr<float>();
  p.k_scale = k_scale.data_ptr<float>();
  token_strides(q, d.nhd, p.q_stride);
  token_strides(k, d.nhd, p.k_stride);
  token_strides(o, d.nhd, p.o_stride);
  p.qs_stride[0] = q_scale.stride(0);
  p.qs_stride[1] = q_scale.stride(1);
  p.ks_stride[0] = k_scale.stride(0);
  p.ks_stride[1] = k_scale.stride(1);
  p.lq = static_cast<int>(d.len_q);
  p.lk = static_cast<int>(d.len_k);
  p.kv_group = static_cast<int>(d.heads_q / d.heads_kv);
  p.qk_scale = static_cast<float>(qk_scale);
  p.causal = is_causal;
  p.out_bf16 = o.scalar_type() == at::kBFloat16;
  return p;
}

// The FP8 V operand ([B, H_kv, D, L_pad] e4m3, tokens contiguous) and its per-channel scale, as
// the sm89 and sm90 FP8 kernels both read them; checked before make_params, bound after it.
inline void check_fp8_v_operand(const at::Tensor& v, const at::Tensor& v_scale, const at::Tensor& q, const Dims& d) {
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
}

inline void bind_fp8_v_operand(AttnParams& p, const at::Tensor& v, const at::Tensor& v_scale) {
  p.v = v.data_ptr();
  p.v_stride[0] = v.stride(0);
  p.v_stride[1] = v.stride(1);
  p.v_stride[2] = v.stride(2);
  p.v_len = static_cast<int>(v.size(3));
  p.v_scale = v_scale.data_ptr<float>();
  p.vs_stride[0] = v_scale.stride(0);
  p.vs_stride[1] = v_scale.stride(1);
}

// Launches the mma.sync kernel of mode M for the head dims this build compiled (SAGEATTN_HEAD_DIMS).
template <PvMode M>
cudaError_t dispatch_head_dim(const AttnParams& p, int64_t head_dim, int batch, int heads, cudaStream_t stream,
                              const char* op) {
  switch (head_dim) {
#ifndef SAGEATTN_NO_HD64
    case 64:
      return launch_qk_int8_attn<64, M>(p, batch, heads, stream);
#endif
#ifndef SAGEATTN_NO_HD128
    case 128:
      return launch_qk_int8_attn<128, M>(p, batch, heads, stream);
#endif
    default:
      TORCH_CHECK(false, "sageattention::", op, ": head dim ", head_dim,
                  " was left out of this build (SAGEATTN_HEAD_DIMS at build time)");
  }
}

inline void check_launch(cudaError_t err, const char* op, int64_t head_dim) {
  TORCH_CHECK(err == cudaSuccess, "sageattention::", op, " (head dim ", head_dim,
              ") failed to launch: ", cudaGetErrorString(err),
              err == cudaErrorNoKernelImageForDevice
                  ? " (this build has no code for this GPU's arch; see README 'Building')"
                  : "");
}

}  // namespace qattn
}  // namespace sageattention
