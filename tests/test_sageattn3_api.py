"""sageattn3_blackwell: dispatch (no-kernel errors, opt-in reference), input checks, edge shapes."""

from __future__ import annotations


import pytest
import torch

from sageattn3 import sageattn3_blackwell
from sageattn3.accuracy import ACCURACY_FLOORS
from sageattn3.api import ALLOW_REFERENCE_ENV, kernel_unavailable_reason
from sageattn3.reference import sageattn3_reference

from sageattention.testing.metrics import cosine_similarity, relative_l1
from sageattention.testing.reference import attention_ref


def _qkv(b=1, hq=2, hkv=2, lq=64, lk=64, d=64, dtype=torch.bfloat16, layout="HND", seed=0):
    gen = torch.Generator().manual_seed(seed)

    def make(h, n):
        shape = (b, h, n, d) if layout == "HND" else (b, n, h, d)
        return torch.randn(*shape, generator=gen).to(dtype)

    return make(hq, lq), make(hkv, lk), make(hkv, lk)


@pytest.fixture(autouse=True)
def _no_env_opt_in(monkeypatch):
    monkeypatch.delenv(ALLOW_REFERENCE_ENV, raising=False)


# --- dispatch -------------------------------------------------------------------------------------


def test_without_opt_in_cpu_tensors_raise_a_clear_error():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="allow_reference=True") as info:
        sageattn3_blackwell(q, k, v)
    assert "cpu" in str(info.value) and ALLOW_REFERENCE_ENV in str(info.value)


def test_env_var_opts_in(monkeypatch):
    q, k, v = _qkv()
    monkeypatch.setenv(ALLOW_REFERENCE_ENV, "1")
    out = sageattn3_blackwell(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype


def test_non_blackwell_gpu_error_names_the_gpu_and_points_to_sageattention():
    msg = kernel_unavailable_reason((9, 0), "NVIDIA H100 80GB HBM3")
    assert "NVIDIA H100 80GB HBM3" in msg and "sm90" in msg and "sageattention.sageattn" in msg
    assert "allow_reference=True" in msg


@pytest.mark.parametrize("capability", [(10, 0), (12, 0), (12, 1)])
def test_blackwell_gpu_error_says_no_kernel_is_compiled(capability):
    msg = kernel_unavailable_reason(capability, "NVIDIA Blackwell")
    assert "no compiled FP4 kernel" in msg and f"sm{capability[0]}{capability[1]}" in msg


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_this_gpu_the_error_names_it():
    q, k, v = (t.cuda() for t in _qkv())
    with pytest.raises(RuntimeError) as info:
        sageattn3_blackwell(q, k, v)
    assert torch.cuda.get_device_name() in str(info.value)
    out = sageattn3_blackwell(q, k, v, allow_reference=True)
    assert out.is_cuda and torch.isfinite(out).all()


# --- results of the opt-in reference path ---------------------------------------------------------


@pytest.mark.parametrize("is_causal", [False, True])
def test_api_equals_the_reference_and_meets_the_randn_floor(is_causal):
    q, k, v = _qkv(lq=300, lk=300, d=128, dtype=torch.float16)
    out, lse = sageattn3_blackwell(q, k, v, is_causal=is_causal, return_lse=True, allow_reference=True)
    ref_out, ref_lse = sageattn3_reference(q, k, v, is_causal=is_causal)
    torch.testing.assert_close(out, ref_out.to(torch.float16), rtol=0, atol=0)
    torch.testing.assert_close(lse, ref_lse, rtol=0, atol=0)
    exact, _ = attention_ref(q, k, v, is_causal=is_causal)
    cos_min, l1_max = ACCURACY_FLOORS[("randn", "two_level")]
    assert cosine_similarity(out, exact) >= cos_min and relative_l1(out, exact) <= l1_max


@pytest.mark.parametrize(
    "shape",
    [
        dict(lq=1, lk=1),                        # one token
        dict(lq=17, lk=17),                      # not a multiple of 16
        dict(lq=130, lk=257),                    # L_q != L_k, not multiples of 128
        dict(hq=8, hkv=1, lq=96, lk=96),         # MQA 8:1
        dict(hq=4, hkv=2, lq=64, lk=80, d=72),   # GQA, head dim not a multiple of 16
        dict(b=3, lq=40, lk=40, d=256),          # largest head dim
    ],
)
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_edge_shapes_match_float64_within_the_randn_floor(shape, layout, is_causal):
    q, k, v = _qkv(layout=layout, **shape)
    out = sageattn3_blackwell(q, k, v, is_causal=is_causal, tensor_layout=layout, allow_reference=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    exact, _ = attention_ref(q, k, v, tensor_layout=layout, is_causal=is_causal)
    cos_min, l1_max = ACCURACY_FLOORS[("randn", "two_level")]
    # A single key makes attention the identity on v: only V's FP4 error is left, still inside the floor.
    assert cosine_similarity(out, exact) >= cos_min
    assert relative_l1(out, exact) <= l1_max


def test_non_contiguous_inputs_give_the_contiguous_result():
    q, k, v = _qkv(layout="NHD", lq=70, lk=70)
    q_t, k_t, v_t = (t.transpose(1, 2) for t in (q, k, v))  # HND views of NHD storage
    assert not q_t.is_contiguous()
    out = sageattn3_blackwell(q_t, k_t, v_t, allow_reference=True)
    expected = sageattn3_blackwell(*(t.contiguous() for t in (q_t, k_t, v_t)), allow_reference=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_sm_scale_is_honoured():
    q, k, v = _qkv(lq=50, lk=50)
    out = sageattn3_blackwell(q, k, v, sm_scale=0.3, allow_reference=True)
    exact, _ = attention_ref(q, k, v, sm_scale=0.3)
    default_exact, _ = attention_ref(q, k, v)
    assert relative_l1(out, exact) < relative_l1(out, default_exact)


def test_inputs_are_not_modified():
    q, k, v = _qkv(hq=4, hkv=2, lq=200, lk=200)
    before = [t.clone() for t in (q, k, v)]
    sageattn3_blackwell(q, k, v, is_causal=True, allow_reference=True)
    for t, b in zip((q, k, v), before):
        torch.testing.assert_close(t, b, rtol=0, atol=0)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda q, k, v: (q.float(), k.float(), v.float()), TypeError, "float16 or bfloat16"),
        (lambda q, k, v: (q, k.half(), v), TypeError, "share a dtype"),
        (lambda q, k, v: (q[0], k, v), ValueError, "q must be 4-D"),
        (lambda q, k, v: (q, k, v[:, :, :10]), ValueError, "same shape"),
        (lambda q, k, v: (q[..., :32], k, v), ValueError, "head_dim"),
        (lambda q, k, v: (q.repeat(1, 3, 1, 1), k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1)), ValueError, "multiple"),
        (lambda q, k, v: (q.tolist(), k, v), TypeError, "q must be a torch.Tensor"),
        (lambda q, k, v: (q, k, v.to("meta")), ValueError, "one device"),
        (lambda q, k, v: (q[:, :, :0], k, v), ValueError, "empty"),
    ],
)
def test_bad_tensors_are_rejected_naming_the_argument(make, error, match):
    q, k, v = make(*_qkv())
    with pytest.raises(error, match=match):
        sageattn3_blackwell(q, k, v, allow_reference=True)


def test_too_large_head_dim_is_rejected():
    q, k, v = _qkv(d=320, lq=4, lk=4)
    with pytest.raises(ValueError, match="head_dim 320"):
        sageattn3_blackwell(q, k, v, allow_reference=True)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(attn_mask=torch.ones(64, 64, dtype=torch.bool)), ValueError, "attn_mask"),
        (dict(dropout_p=0.1), ValueError, "dropout_p"),
        (dict(scale=0.1), TypeError, "scale"),
        (dict(smooth_k=False), TypeError, "smooth_k"),
        (dict(tensor_layout="BHLD"), ValueError, "tensor_layout"),
        (dict(sm_scale=-1.0), ValueError, "sm_scale"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, match):
    q, k, v = _qkv()
    with pytest.raises(error, match=match):
        sageattn3_blackwell(q, k, v, allow_reference=True, **kwargs)


def test_dropout_zero_is_accepted_as_a_no_op():
    q, k, v = _qkv()
    torch.testing.assert_close(
        sageattn3_blackwell(q, k, v, dropout_p=0.0, allow_reference=True),
        sageattn3_blackwell(q, k, v, allow_reference=True), rtol=0, atol=0,
    )
