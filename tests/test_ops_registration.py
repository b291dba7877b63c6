"""Op registration contract: schemas in one file, impl + fake + wrapper for each, lazy loading.

Runs without a build or GPU: the static checks read csrc/ and sageattention/_ops.py; the loaded
checks run where ``sageattention._C`` is importable (a build extracted into the tree, or an
installed wheel) and skip otherwise, naming why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sageattention import _ops

REPO = Path(__file__).resolve().parent.parent
CSRC = REPO / "csrc"
BINDINGS = CSRC / "torch_bindings.cpp"
_DEF = re.compile(r'm\.def\(\s*"(\w+)\(', re.S)
_IMPL = re.compile(r'm\.impl\("(\w+)"')


def _schemas() -> dict[str, str]:
    """op name -> schema text, from the m.def(...) calls of torch_bindings.cpp."""
    text = BINDINGS.read_text()
    schemas = {}
    for match in re.finditer(r'm\.def\(\s*((?:"[^"]*"\s*)+)\)', text):
        schema = "".join(re.findall(r'"([^"]*)"', match.group(1)))
        schemas[schema.split("(")[0]] = schema
    return schemas


def test_every_schema_lives_in_torch_bindings():
    names = list(_schemas())
    assert names == ["quant_per_block_int8", "mean_over_tokens", "quant_per_thread_int8", "quant_v_fp8_operand",
                     "quant_mma_operands", "qk_int8_sv_f16_attn", "qk_int8_sv_f8_attn", "qk_int8_sv_f8_attn_sm90"]
    elsewhere = [p for p in CSRC.rglob("*") if p.is_file() and p != BINDINGS and _DEF.search(p.read_text())]
    assert elsewhere == [], "TORCH_LIBRARY schemas belong in csrc/torch_bindings.cpp only"


def test_no_pybind11_and_one_namespace():
    for path in CSRC.rglob("*"):
        if path.is_file():
            text = path.read_text()
            # torch/extension.h pulls pybind11 in; the PyInit__C stub needs only Python.h.
            assert not re.search(r"#include\s*[<\"](pybind11/|torch/extension\.h)", text), path
            assert "PYBIND11_MODULE" not in text, path
            for namespace in re.findall(r"TORCH_LIBRARY(?:_IMPL)?\((\w+)", text):
                assert namespace == "sageattention", path


def test_every_op_has_a_cuda_impl_a_fake_and_a_wrapper():
    impls = set()
    for path in CSRC.rglob("*.cu"):
        impls |= set(_IMPL.findall(path.read_text()))
    ops_source = (REPO / "sageattention" / "_ops.py").read_text()
    for name in _schemas():
        assert name in impls, f"{name}: no TORCH_LIBRARY_IMPL(sageattention, CUDA) in csrc/**/*.cu"
        assert f'register_fake("sageattention::{name}")' in ops_source, f"{name}: no register_fake"
        assert callable(getattr(_ops, name, None)), f"{name}: no wrapper in sageattention/_ops.py"


def test_outputs_are_annotated_as_mutated():
    for name, schema in _schemas().items():
        assert schema.endswith("-> ()"), f"{name}: destination-passing ops return nothing"
        assert "!)" in schema, f"{name}: outputs must be Tensor(x!)"


def test_missing_build_reason_agrees_with_availability():
    available = _ops.cuda_ops_available()
    reason = _ops.missing_build_reason()
    assert available == (reason == "")
    if not available:
        assert "sageattention._C" in reason and ("scripts.build" in reason or "wheel" in reason)


def test_a_missing_build_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(_ops, "_loaded", False)
    monkeypatch.setattr(_ops, "_load_failure", "sageattention._C is not built: (test)")
    with pytest.raises(_ops.CUDAOpsUnavailableError, match="not built"):
        _ops._require_ops()


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: _ops.quant_per_block_int8(torch.zeros(1, 2, 8, 16, dtype=torch.float16), 64), ValueError,
         "x must be a CUDA tensor"),
        (lambda: _ops.quant_per_block_int8("q", 64), TypeError, "x must be a torch.Tensor"),
        (lambda: _ops.mean_over_tokens(torch.zeros(1, 2, 8, 16), tensor_layout="NHD"), ValueError, "CUDA tensor"),
        (lambda: _ops.quant_qk_per_block_int8(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8),
                                              tensor_layout="BHND"), ValueError, "tensor_layout must be 'HND' or 'NHD'"),
    ],
    ids=["cpu-tensor", "not-a-tensor", "mean-cpu", "bad-layout"],
)
def test_bad_input_is_named_before_dispatch(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_cpu_error_says_when_no_gpu_is_visible():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ValueError, match="no usable GPU"):
        _ops.quant_per_block_int8(torch.zeros(1, 1, 4, 8, dtype=torch.float16), 64)


def _require_loaded():
    if not _ops.cuda_ops_available():
        pytest.skip(f"compiled ops not loadable here: {_ops.missing_build_reason()}")


def test_loaded_schemas_equal_the_source():
    _require_loaded()
    for name, schema in _schemas().items():
        loaded = str(getattr(torch.ops.sageattention, name).default._schema)
        assert loaded == f"sageattention::{schema}"


def test_fake_kernels_trace_without_a_gpu():
    """FakeTensorMode runs the registered fakes: shapes flow through without any device work."""
    _require_loaded()
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 3, 130, 64, dtype=torch.float16, device="cuda")
        k = torch.empty(2, 130, 1, 64, dtype=torch.bfloat16, device="cuda")
        q_int8, q_scale = _ops.quant_per_block_int8(q, 128, pre_scale=0.18)
        k_int8, k_scale = _ops.quant_per_block_int8(k, 64, tensor_layout="NHD")
        mean = _ops.mean_over_tokens(k, tensor_layout="NHD")
    assert q_int8.shape == q.shape and q_int8.dtype == torch.int8
    assert tuple(q_scale.shape) == (2, 3, 2) and tuple(k_scale.shape) == (2, 1, 3)
    assert tuple(mean.shape) == (2, 1, 1, 64) and mean.dtype == torch.float32
