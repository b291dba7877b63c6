// Every operator schema of sageattention._C, in one place (STYLE.md H3).
//
// Implementations register themselves next to their launchers with
// TORCH_LIBRARY_IMPL(sageattention, CUDA, m) (csrc/fused/*.cu, csrc/qattn/*.cu), so a wheel built
// without some arch gives PyTorch's "no kernel" error instead of an import failure.
//
// Destination-passing: outputs are arguments annotated Tensor(x!) and the ops return nothing;
// sageattention/_ops.py allocates them and registers a fake (meta) kernel for each op.
//
// No pybind11: the module is an empty Python module whose import runs the static registrations
// below, which keeps the door open to py_limited_api (abi3) wheels.

#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(sageattention, m) {
  // Per-block symmetric INT8 quantization (algorithm notes §1.5, §2.2; contract in
  // sageattention/testing/reference.py). For each group of `block_size` consecutive tokens of one
  // (batch, head):  y = (x - mean) * pre_scale,  scale = absmax(y) / 127,
  // x_int8 = clamp(round_half_away_from_zero(y / scale), -127, 127); an all-zero group gets
  // scale 0 and zeros.
  //   x        [B, H, L, D] ("HND") or [B, L, H, D] ("NHD"), fp16/bf16, last dim contiguous
  //   x_int8   same shape and layout as x, int8, last dim contiguous          (written)
  //   scale    [B, H, ceil(L / block_size)] float32                           (written)
  //   mean     optional [B, H, 1, D] float32, subtracted before scaling (K smoothing)
  //   pre_scale  multiplier folded in before the absmax (sm_scale * log2(e) for Q, 1 for K)
  m.def(
      "quant_per_block_int8(Tensor x, Tensor(a!) x_int8, Tensor(b!) scale, Tensor? mean, "
      "float pre_scale, int block_size, str tensor_layout) -> ()");

  // Mean over all tokens per (batch, head, channel), accumulated in float32 (K smoothing, §2.2).
  //   x     [B, H, L, D] ("HND") or [B, L, H, D] ("NHD"), fp16/bf16, last dim contiguous
  //   mean  [B, H, 1, D] float32                                             (written)
  m.def("mean_over_tokens(Tensor x, Tensor(a!) mean, str tensor_layout) -> ()");

  // Per-thread / per-warp INT8 quantization in the mma.sync fragment groups (algorithm notes
  // §2.3.2; contract: quant_int8_slab_groups in sageattention/testing/reference.py). Tokens are cut
  // into slabs of `warp` rows; row r of slab s belongs to group s * G + (r mod 8) / (8 / G),
  // G = groups_per_warp (8: per-thread Q, 4: per-thread K, 1: per-warp). Per group, the math of
  // quant_per_block_int8.
  //   x        [B, H, L, D] ("HND") or [B, L, H, D] ("NHD"), fp16/bf16, last dim contiguous
  //   x_int8   x's shape and layout with last dim D_out >= D (zeros past D), int8   (written)
  //   scale    [B, H, ceil(L / block) * (block / warp) * G] float32, padding groups 0 (written)
  //   mean     optional [B, H, 1, D] float32, subtracted before scaling (K smoothing)
  //   block, warp  tile rows (128 / 64) and slab rows (16 for Q, 64 for K); warp % 8 == 0,
  //            block % warp == 0
  m.def(
      "quant_per_thread_int8(Tensor x, Tensor(a!) x_int8, Tensor(b!) scale, Tensor? mean, "
      "float pre_scale, int block, int warp, int groups_per_warp, str tensor_layout) -> ()");

  // V -> the FP8 e4m3 operand of qk_int8_sv_f8_attn (below), per-channel scale, optional V
  // smoothing (algorithm notes §2.3.4, §2.3.6; the bytes of the Triton quant_per_channel_fp8
  // followed by sageattention._ops.fp8_v_operand). Per (batch, head, channel) over all tokens:
  // scale = absmax(v - mean) / scale_max, v_fp8 = e4m3(clamp((v - mean) / scale, ±scale_max)).
  //   v          [B, H, L, D] ("HND") or [B, L, H, D] ("NHD"), fp16/bf16, last dim contiguous
  //   v_operand  [B, H, D_out, ceil(L / 64) * 64] float8_e4m3fn contiguous, D_out >= D: tokens
  //              contiguous, zero past L and past D, permuted in 16-token groups  (written)
  //   v_scale    [B, H, D_out] float32 contiguous (0 past D)                       (written)
  //   v_mean     optional [B, H, 1, D_out] float32 contiguous: given = smooth_v; the mean
  //              over tokens is subtracted and written here (0 past D)             (written)
  //   scale_max  in (0, 448]: 448 for FP32-accumulated P·V, 2.25 for SageAttention2++
  m.def(
      "quant_v_fp8_operand(Tensor v, Tensor(a!) v_operand, Tensor(b!) v_scale, Tensor(c!)? v_mean, "
      "float scale_max, str tensor_layout) -> ()");

  // The operands of the attention ops below in one call (three launches): exactly
  //   mean_over_tokens(k, k_mean)                                   if k_mean is given
  //   quant_per_thread_int8(q, q_int8, q_scale, None, q_pre_scale, q_block, q_warp, q_groups_per_warp)
  //   quant_per_thread_int8(k, k_int8, k_scale, k_mean, 1.0, k_block, k_warp, k_groups_per_warp)
  //   quant_v_fp8_operand(v, v_operand, v_scale, v_mean, v_scale_max)  if v is given
  // with one tensor_layout; q, k (and v) of one dtype and device. Without v, v_operand, v_scale
  // and v_mean must be None; with v, v_operand and v_scale are required.
  m.def(
      "quant_mma_operands(Tensor q, Tensor k, Tensor? v, Tensor(a!) q_int8, Tensor(b!) q_scale, "
      "Tensor(c!) k_int8, Tensor(d!) k_scale, Tensor(e!)? k_mean, Tensor(f!)? v_operand, "
      "Tensor(g!)? v_scale, Tensor(h!)? v_mean, float q_pre_scale, int q_block, int q_warp, "
      "int q_groups_per_warp, int k_block, int k_warp, int k_groups_per_warp, float v_scale_max, "
      "str tensor_layout) -> ()");

  // Attention with INT8 Q·Kᵀ and FP16 P·V (SageAttention2, mma.sync; csrc/qattn/, built for sm80-sm87,
  // algorithm notes §2.3). Scores are S = (q·k) · q_scale · k_scale · qk_scale in the log2 domain
  // (qk_scale = sm_scale · log2(e), or 1 when the quantizer folded it into q); the softmax uses exp2.
  //   q        [B, H_q, L_q, D] ("HND") or [B, L_q, H_q, D] ("NHD") int8, D in {64, 128};
  //            16-byte aligned rows (any strides that are multiples of 16 bytes)
  //   k        [B, H_kv, L_k, D] / [B, L_k, H_kv, D] int8, H_q % H_kv == 0 (GQA)
  //   v        k's shape, float16, 16-byte aligned rows
  //   o        q's shape, float16 or bfloat16                                   (written)
  //   q_scale  [B, H_q, ceil(L_q / 128) * 8 * G] float32: 16-row slabs; per_thread G = 8 (row mod 8),
  //            per_warp G = 1
  //   k_scale  [B, H_kv, ceil(L_k / 64) * G] float32: per_thread G = 4 ((key mod 8) / 2), per_warp G = 1
  //   lse      optional [B, H_q, L_q] float32: base-2 logsumexp of the scores S (written)
  //   is_causal  top-left aligned: query i sees keys 0..i
  //   qk_quant_gran  "per_thread" or "per_warp";  pv_accum_dtype  "fp32", "fp16+fp32" or "fp16"
  m.def(
      "qk_int8_sv_f16_attn(Tensor q, Tensor k, Tensor v, Tensor(a!) o, Tensor q_scale, Tensor k_scale, "
      "Tensor(b!)? lse, str tensor_layout, bool is_causal, str qk_quant_gran, float qk_scale, "
      "str pv_accum_dtype) -> ()");

  // Attention with INT8 Q·Kᵀ and FP8 e4m3 P·V (SageAttention2 / 2++; built for sm89, sm100-sm121).
  // q, k, o, q_scale, k_scale, lse, is_causal, qk_quant_gran, qk_scale as qk_int8_sv_f16_attn;
  //   v        [B, H_kv, D, L_pad] float8_e4m3fn, tokens contiguous, L_pad % 64 == 0, zero past L_k;
  //            inside each group of 16 tokens, position p holds token
  //            [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15][p] (the FP8 MMA operand order)
  //   v_scale  [B, H_kv, D] float32: V = v · v_scale per channel
  //   pv_accum_dtype  "fp32" (one f32-accumulating MMA chain), "fp32+fp32" (per-64-key MMA from
  //            zero, then an f32 add) or "fp32+fp16" (f16-accumulating MMA per 64 keys, then an
  //            f32 add: |P| <= 448, |v| <= 2.25 keeps 64 products below 65504)
  m.def(
      "qk_int8_sv_f8_attn(Tensor q, Tensor k, Tensor v, Tensor v_scale, Tensor(a!) o, Tensor q_scale, "
      "Tensor k_scale, Tensor(b!)? lse, str tensor_layout, bool is_causal, str qk_quant_gran, "
      "float qk_scale, str pv_accum_dtype) -> ()");
  // The Hopper (sm_90a, wgmma) kernel of qk_int8_sv_f8_attn: the same arguments and operand
  // contract; pv_accum_dtype must be "fp32+fp32" (FP8 wgmma per 64-key block from zero, then an
  // f32 add). Registered only by builds that include 9.0a.
  m.def(
      "qk_int8_sv_f8_attn_sm90(Tensor q, Tensor k, Tensor v, Tensor v_scale, Tensor(a!) o, Tensor q_scale, "
      "Tensor k_scale, Tensor(b!)? lse, str tensor_layout, bool is_causal, str qk_quant_gran, "
      "float qk_scale, str pv_accum_dtype) -> ()");
}

// The extension is imported as `sageattention._C`; the import only has to run the registrations.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",                                                  // m_name
      "sageattention CUDA ops, registered under torch.ops.sageattention",  // m_doc
      -1,                                                    // m_size
      nullptr,                                               // m_methods
  };
  return PyModule_Create(&module_def);
}
