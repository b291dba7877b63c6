"""SageAttention: quantized attention (INT8 Q·Kᵀ, FP8/FP16 P·V) for PyTorch.

``__all__`` is the public API contract: upstream SageAttention 2.2.0's six entry points (the names
diffusers and ComfyUI import) plus ``sageattn_qk_int8_pv_fp8_triton``. Importing the package needs
neither a GPU, nor triton, nor the compiled ``sageattention._C``: the Triton kernels are imported on
first call and the CUDA kernels through ``sageattention._ops``, each raising a clear error naming
what is missing.
"""

from .api import (
    sageattn,
    sageattn_qk_int8_pv_fp8_cuda,
    sageattn_qk_int8_pv_fp8_cuda_sm90,
    sageattn_qk_int8_pv_fp8_triton,
    sageattn_qk_int8_pv_fp16_cuda,
    sageattn_qk_int8_pv_fp16_triton,
    sageattn_varlen,
)

# A literal, not importlib.metadata: the in-tree package (tests, benchmarks) has no distribution
# metadata. tests/test_api_validation.py keeps it equal to pyproject.toml's version, which is what
# diffusers reads (it requires the *distribution* version >= 2.1.1).
__version__ = "2.2.0"

__all__ = [
    "sageattn",
    "sageattn_varlen",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
    "sageattn_qk_int8_pv_fp8_triton",
]
