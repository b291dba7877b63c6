"""``api._cuda_quantize``: what the public CUDA functions (and the kernel-only benchmark) feed the
CUDA attention ops, with either quantizer backend: the Triton one runs on CPU in the interpreter,
the CUDA one (the default) on a GPU. It checks the operands against the reference quantizers in
the kernels' groups, not just their shapes.
"""

from __future__ import annotations

import pytest
import torch

from sageattention import api
from sageattention._ops import FP8_V_TOKEN_PERMUTATION
from sageattention.testing.emulation import MMA_BLOCK_K, MMA_BLOCK_Q, MMA_WARP_Q, quant_per_channel_fp8_ref
from sageattention.testing.reference import quant_per_thread_int8_ref, quant_per_warp_int8_ref


def _qkv(device, layout, d, n=70):
    shape = (1, 2, n, d) if layout == "HND" else (1, n, 2, d)
    return (torch.randn(shape, device=device, dtype=torch.float16) for _ in range(3))


def _assert_int8_within_one_step(got, want):
    assert got.dtype == torch.int8 and got.shape == want.shape
    assert (got.to(torch.int16) - want.to(torch.int16)).abs().max() <= 1


def _skip_unless_runnable(backend, device):
    if backend == "cuda" and device != "cuda":
        pytest.skip("the CUDA quantizers need a GPU (the Triton ones run in the interpreter)")


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("gran", ["per_thread", "per_warp"])
def test_qk_operands_match_the_reference_groups(layout, gran, backend, device):
    _skip_unless_runnable(backend, device)
    d = 64
    q, k, v = _qkv(device, layout, d)
    ops = api._cuda_quantize(q, k, v, tensor_layout=layout, qk_quant_gran=gran, sm_scale=d**-0.5,
                             pv_accum_dtype="fp32", smooth_k=True, smooth_v=False, pv="fp16", d=d, d_pad=d,
                             quantization_backend=backend)
    if gran == "per_thread":
        ref = quant_per_thread_int8_ref(q, k, tensor_layout=layout, fold_sm_scale=True, blkq=MMA_BLOCK_Q,
                                        warpq=MMA_WARP_Q, blkk=MMA_BLOCK_K, warpk=MMA_BLOCK_K)
    else:
        ref = quant_per_warp_int8_ref(q, k, tensor_layout=layout, blkq=MMA_BLOCK_Q, warpq=MMA_WARP_Q,
                                      blkk=MMA_BLOCK_K)
    q_i8, q_scale, k_i8, k_scale, k_mean = ref
    _assert_int8_within_one_step(ops.q_i8, q_i8)
    _assert_int8_within_one_step(ops.k_i8, k_i8)
    torch.testing.assert_close(ops.q_scale, q_scale, rtol=1e-6, atol=0)
    torch.testing.assert_close(ops.k_scale, k_scale, rtol=1e-6, atol=0)
    assert ops.v.dtype == torch.float16 and ops.v_scale is None and ops.v_mean is None


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_fp8_v_operand_is_token_major_padded_and_permuted(backend, device):
    _skip_unless_runnable(backend, device)
    d, n = 64, 70
    q, k, v = _qkv(device, "HND", d, n)
    ops = api._cuda_quantize(q, k, v, tensor_layout="HND", qk_quant_gran="per_thread", sm_scale=d**-0.5,
                             pv_accum_dtype="fp32+fp16", smooth_k=True, smooth_v=False, pv="fp8", d=d, d_pad=d,
                             quantization_backend=backend)
    v8, v_scale = quant_per_channel_fp8_ref(v, tensor_layout="HND", scale_max=2.25)
    n_pad = -(-n // MMA_BLOCK_K) * MMA_BLOCK_K
    assert ops.v.dtype == torch.float8_e4m3fn and ops.v.shape == (1, 2, d, n_pad)
    torch.testing.assert_close(ops.v_scale.float().reshape(v_scale.shape), v_scale.float(), rtol=1e-6, atol=0)
    # Undo the in-group token permutation: operand column g*16 + i holds token g*16 + perm[i].
    perm = torch.tensor(FP8_V_TOKEN_PERMUTATION, device=ops.v.device)
    tokens = (torch.arange(n_pad, device=ops.v.device) // 16) * 16 + perm.repeat(n_pad // 16)
    restored = torch.zeros((1, 2, d, n_pad), dtype=torch.float32, device=ops.v.device)
    restored[..., tokens] = ops.v.float()
    torch.testing.assert_close(restored[..., :n], v8.float().transpose(2, 3), rtol=0.0625, atol=2.0**-9)
    assert (restored[..., n:] == 0).all(), "padding tokens must be zero"


def test_quantization_backend_defaults_to_cuda_and_rejects_unknown_names():
    assert api._CUDA_QUANTIZATION_BACKEND == "cuda"  # faster on the H100 (api.py comment has the numbers)
    q, k, v = _qkv("cpu", "HND", 64)
    with pytest.raises(ValueError, match="quantization_backend must be 'triton' or 'cuda'"):
        api._cuda_quantize(q, k, v, tensor_layout="HND", qk_quant_gran="per_thread", sm_scale=0.125,
                           pv_accum_dtype="fp32", smooth_k=True, smooth_v=False, pv="fp16", d=64, d_pad=64,
                           quantization_backend="cutlass")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("gran", ["per_thread", "per_warp"])
@pytest.mark.parametrize("pv, accum, smooth_v", [("fp16", "fp32", False), ("fp8", "fp32+fp32", False),
                                                 ("fp8", "fp32+fp16", False), ("fp8", "fp32+fp16", True)])
@pytest.mark.parametrize("d, d_pad", [(64, 64), (96, 128)])
def test_cuda_backend_matches_triton_backend(layout, gran, pv, accum, smooth_v, d, d_pad):
    """The fused CUDA quantizers give the Triton path's operands: Q and (unsmoothed) V bit for bit; K and
    smoothed V within one rounding step (their means are float32 sums taken in another order)."""
    from sageattention import _ops, _support

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not set(_support.CUDA_MMA_QUANT_OPS) <= _support.built_cuda_ops():
        pytest.skip(f"compiled quantizers not built: {_ops.missing_build_reason() or 'ops missing from this build'}")
    q, k, v = _qkv("cuda", layout, d, n=333)
    args = dict(tensor_layout=layout, qk_quant_gran=gran, sm_scale=d**-0.5, pv_accum_dtype=accum, smooth_k=True,
                smooth_v=smooth_v, pv=pv, d=d, d_pad=d_pad)
    got = api._cuda_quantize(q, k, v, quantization_backend="cuda", **args)
    want = api._cuda_quantize(q, k, v, quantization_backend="triton", **args)
    assert torch.equal(got.q_i8, want.q_i8) and torch.equal(got.q_scale, want.q_scale)
    _assert_int8_within_one_step(got.k_i8, want.k_i8)
    torch.testing.assert_close(got.k_scale, want.k_scale)
    torch.testing.assert_close(got.k_mean, want.k_mean)
    assert got.v.dtype == want.v.dtype and got.v.shape == want.v.shape
    if pv == "fp16":
        assert torch.equal(got.v, want.v)
    elif not smooth_v:
        assert torch.equal(got.v.view(torch.uint8), want.v.view(torch.uint8))
        assert torch.equal(got.v_scale, want.v_scale)
    else:
        torch.testing.assert_close(got.v_mean, want.v_mean)
        torch.testing.assert_close(got.v_scale, want.v_scale)
        a, b = got.v.float(), want.v.float()
        assert ((a - b).abs() <= torch.maximum(a.abs(), b.abs()) * 0.125 + 2.0**-9).all()
