"""Bad input to the public API raises ValueError/TypeError/RuntimeError naming the argument."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import sageattention
from sageattention import _support

UPSTREAM_NAMES = [
    "sageattn", "sageattn_varlen", "sageattn_qk_int8_pv_fp16_triton", "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp8_cuda", "sageattn_qk_int8_pv_fp8_cuda_sm90",
]
DENSE = [
    sageattention.sageattn,
    sageattention.sageattn_qk_int8_pv_fp16_triton,
    sageattention.sageattn_qk_int8_pv_fp8_triton,
    sageattention.sageattn_qk_int8_pv_fp16_cuda,
    sageattention.sageattn_qk_int8_pv_fp8_cuda,
    sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90,
]
CUDA_ONLY = DENSE[3:]


def test_public_names_and_version():
    assert sageattention.__all__ == UPSTREAM_NAMES + ["sageattn_qk_int8_pv_fp8_triton"]
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert sageattention.__version__ == version == "2.2.0"


def _qkv(device, shape=(1, 2, 8, 64), dtype=torch.float16):
    return tuple(torch.randn(shape, device=device, dtype=dtype) for _ in range(3))


# (description, mutate(q, k, v) -> (q, k, v, kwargs), exception, message fragment)
BAD_INPUTS = [
    ("fp32", lambda q, k, v: (q.float(), k.float(), v.float(), {}), TypeError, "q must be torch.float16"),
    ("dtype mismatch", lambda q, k, v: (q, k.bfloat16(), v, {}), TypeError, "share one dtype"),
    ("int tensor", lambda q, k, v: (q, k, v.to(torch.int32), {}), TypeError, "v must be torch.float16"),
    ("not a tensor", lambda q, k, v: (q, k.tolist(), v, {}), TypeError, "k must be a torch.Tensor"),
    ("3-D q", lambda q, k, v: (q[0], k, v, {}), ValueError, "q must be 4-D"),
    ("layout string", lambda q, k, v: (q, k, v, {"tensor_layout": "BHSD"}), ValueError, "tensor_layout"),
    ("head dim differs", lambda q, k, v: (q, k[..., :32], v, {}), ValueError, "head dims differ"),
    ("head dim too big", lambda q, k, v: (*(t.repeat(1, 1, 1, 5) for t in (q, k, v)), {}), ValueError, "head_dim 320"),
    ("gqa", lambda q, k, v: (q[:, :1].repeat(1, 3, 1, 1), k, v, {}), ValueError, "multiple of key/value heads"),
    ("batch", lambda q, k, v: (q.repeat(2, 1, 1, 1), k, v, {}), ValueError, "batch sizes differ"),
    ("k/v length", lambda q, k, v: (q, k, v[:, :, :5], {}), ValueError, "same heads and length"),
    ("attn_mask", lambda q, k, v: (q, k, v, {"attn_mask": torch.ones(8, 8, dtype=torch.bool)}), ValueError, "attn_mask"),
    ("dropout", lambda q, k, v: (q, k, v, {"dropout_p": 0.1}), ValueError, "dropout_p"),
    ("typo kwarg", lambda q, k, v: (q, k, v, {"is_casual": True}), TypeError, "is_casual"),
    ("scale disagrees", lambda q, k, v: (q, k, v, {"scale": 0.5, "sm_scale": 0.25}), ValueError, "scale"),
    ("negative sm_scale", lambda q, k, v: (q, k, v, {"sm_scale": -1.0}), ValueError, "sm_scale"),
    ("is_causal not bool", lambda q, k, v: (q, k, v, {"is_causal": "yes"}), TypeError, "is_causal"),
]


@pytest.mark.parametrize("fn", DENSE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
def test_bad_input_matrix(fn, case, device):
    _, mutate, exc, fragment = case
    q, k, v, kwargs = mutate(*_qkv(device))
    with pytest.raises(exc, match=re.escape(fragment)):
        fn(q, k, v, **kwargs)


@pytest.mark.parametrize("fn", DENSE, ids=lambda f: f.__name__)
def test_devices_differ(fn, device):
    q, k, v = _qkv(device)
    if device == "cuda":
        other = v.cpu()
        with pytest.raises(ValueError, match="one device"):
            fn(q, k, other)
    else:
        with pytest.raises(ValueError, match="one device"):
            fn(q, k, v.to("meta"))


@pytest.mark.parametrize("fn", DENSE[:3], ids=lambda f: f.__name__)
def test_cpu_tensor_outside_interpreter(fn, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = _qkv("cpu")
    with pytest.raises(ValueError, match="CUDA tensors"):
        fn(q, k, v)


@pytest.mark.parametrize(
    "fn, name, value",
    [
        (sageattention.sageattn_qk_int8_pv_fp16_cuda, "pv_accum_dtype", "fp32+fp16"),
        (sageattention.sageattn_qk_int8_pv_fp8_cuda, "pv_accum_dtype", "fp16"),
        (sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90, "pv_accum_dtype", "fp32"),
        (sageattention.sageattn_qk_int8_pv_fp16_cuda, "qk_quant_gran", "per_block"),
        (sageattention.sageattn_qk_int8_pv_fp16_triton, "quantization_backend", "cutlass"),
    ],
)
def test_bad_enum_values(fn, name, value, device):
    with pytest.raises(ValueError, match=name):
        fn(*_qkv(device), **{name: value})


def test_smooth_v_needs_its_accumulation_mode(device):
    with pytest.raises(ValueError, match="smooth_v"):
        sageattention.sageattn_qk_int8_pv_fp8_cuda(*_qkv(device), smooth_v=True, pv_accum_dtype="fp32+fp16")
    with pytest.raises(ValueError, match="smooth_v"):
        sageattention.sageattn_qk_int8_pv_fp16_cuda(*_qkv(device), smooth_v=True)


def test_cuda_head_dim_limit(device):
    q, k, v = _qkv(device, shape=(1, 1, 8, 192))
    with pytest.raises(ValueError, match="head_dim 192"):
        sageattention.sageattn_qk_int8_pv_fp8_cuda(q, k, v)


@pytest.mark.parametrize("fn", CUDA_ONLY, ids=lambda f: f.__name__)
def test_cuda_entry_points_name_the_missing_build(fn, device):
    if _support.VARIANTS[fn.__name__].cuda_op in _support.built_cuda_ops():
        pytest.skip(f"this build has the compiled op of {fn.__name__}; covered by the CUDA kernel tests")
    with pytest.raises(RuntimeError, match="compiled CUDA kernels"):
        fn(*_qkv(device))


def test_cuda_quantization_backend_names_the_missing_build(device):
    if set(_support.CUDA_HELPER_OPS) <= _support.built_cuda_ops():
        pytest.skip("compiled quantizer present: tests/test_api_accuracy.py runs this path")
    with pytest.raises(RuntimeError, match="compiled CUDA kernels"):
        sageattention.sageattn_qk_int8_pv_fp16_triton(*_qkv(device), quantization_backend="cuda")


def _varlen(device, lengths=(3, 5)):
    cu = torch.tensor([0, lengths[0], sum(lengths)], dtype=torch.int32, device=device)
    t = sum(lengths)
    q, k, v = (torch.randn(t, 2, 64, device=device, dtype=torch.float16) for _ in range(3))
    return q, k, v, cu, cu, max(lengths), max(lengths)


VARLEN_BAD = [
    ("int64 cu", lambda a: (*a[:3], a[3].long(), *a[4:]), TypeError, "cu_seqlens_q must be a 1-D torch.int32"),
    ("cu not ending at T", lambda a: (*a[:3], a[3] - 1, *a[4:]), ValueError, "cu_seqlens_q must start at 0"),
    ("wrong max", lambda a: (*a[:5], 4, a[6]), ValueError, "max_seqlen_q=4"),
    ("float max", lambda a: (*a[:6], 5.0), TypeError, "max_seqlen_k"),
    ("4-D q", lambda a: (a[0][None], *a[1:]), ValueError, "q must be 3-D"),
    # max_seqlen_q stays right (5), so only the B + 1 mismatch can trigger the error.
    ("cu lengths differ", lambda a: (*a[:4], torch.tensor([0, 8], dtype=torch.int32, device=a[0].device), 5, 8),
     ValueError, "must have the same length"),
]


@pytest.mark.parametrize("case", VARLEN_BAD, ids=lambda c: c[0])
def test_varlen_bad_input(case, device):
    _, mutate, exc, fragment = case
    args = mutate(_varlen(device))
    with pytest.raises(exc, match=re.escape(fragment) if fragment else None):
        sageattention.sageattn_varlen(*args)


def test_varlen_strided_cu_seqlens_are_read_correctly(device):
    # cu[::2] is a strided view; the kernels index cu_seqlens[b] at offset b.
    q, k, v, cu, _, max_q, max_k = _varlen(device)
    spread = torch.stack([cu, torch.full_like(cu, 99)], dim=1).flatten()[:-1]
    strided = spread[::2]
    assert not strided.is_contiguous() and torch.equal(strided, cu)
    want = sageattention.sageattn_varlen(q, k, v, cu, cu, max_q, max_k)
    got = sageattention.sageattn_varlen(q, k, v, strided, strided, max_q, max_k)
    assert torch.equal(got, want)


def test_varlen_accepts_an_upper_bound_for_max_seqlen(device):
    # flash-attn and upstream callers pass an upper bound; the result must not change.
    q, k, v, cu, _, max_q, max_k = _varlen(device)
    want = sageattention.sageattn_varlen(q, k, v, cu, cu, max_q, max_k)
    got = sageattention.sageattn_varlen(q, k, v, cu, cu, max_q + 200, max_k + 77)
    assert torch.equal(got, want)


def test_import_needs_no_triton_and_no_extension():
    # A fresh interpreter where triton cannot be imported still imports the package.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None; import sageattention; "
        "print(sageattention.__version__, len(sageattention.__all__))"
    )
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2.2.0", "7"]
