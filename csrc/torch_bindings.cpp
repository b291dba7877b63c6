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
