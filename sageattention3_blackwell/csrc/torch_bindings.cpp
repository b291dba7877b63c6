// Every operator schema of sageattn3._C, in one place (as csrc/torch_bindings.cpp of sageattention).
//
// Implementations register themselves next to their launchers with TORCH_LIBRARY_IMPL(sageattn3,
// CUDA, m) (quant_nvfp4.cu, attn_fwd.cu). Destination-passing: outputs are Tensor(x!) arguments
// and the ops return nothing; sageattn3/_ops.py allocates them and registers the fake kernels.
// No pybind11: importing the empty module `sageattn3._C` runs the static registrations.

#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(sageattn3, m) {
  // NVFP4 quantization along the last dim (16-element blocks, E4M3 scale rounded before its
  // reciprocal; bit-identical to sageattn3.nvfp4.quantize_nvfp4).
  //   x       float32 [..., N], contiguous, N % 16 == 0
  //   codes   uint8 [..., N/2], two E2M1 codes per byte (element 2j in the low nibble)  (written)
  //   scales  uint8 [..., N/16], E4M3 bits                                              (written)
  m.def("quant_nvfp4(Tensor x, Tensor(a!) codes, Tensor(b!) scales) -> ()");

  // SageAttention3 forward on quantized operands (csrc/attn_fwd.cu has the shapes and the math).
  // out float32 [B, Hq, Lq_pad, D] and lse float32 [B, Hq, Lq_pad] are written.
  m.def(
      "attn_fwd(Tensor q_codes, Tensor q_scales, Tensor k_codes, Tensor k_scales, Tensor v_codes, "
      "Tensor v_scales, Tensor delta_s, Tensor(a!) out, Tensor(b!) lse, int kv_len, float sm_scale, "
      "bool is_causal, bool per_block_mean) -> ()");
}

// The extension is imported as `sageattn3._C`; the import only has to run the registrations.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",                                              // m_name
      "sageattn3 CUDA ops, registered under torch.ops.sageattn3",  // m_doc
      -1,                                                // m_size
      nullptr,                                           // m_methods
  };
  return PyModule_Create(&module_def);
}
