"""The compiled per-block INT8 quantizer against ``quant_per_block_int8_ref`` (GPU + build needed).

The reference runs on CPU copies of the inputs: CPU float32 division is IEEE ``a / b``, which is
what the kernel's ``__fdiv_rn`` computes (CUDA torch turns division by a Python scalar into a
multiplication by its reciprocal, which can differ by one ulp).

* Q (no mean involved) must match bit for bit.
* K with the reference's own mean passed in must match bit for bit.
* K with the kernel's mean: the mean is a float32 sum in another order, so int8 values may
  differ by one rounding step where a value sits on a .5 boundary (the quantization contract);
  fed the kernel's mean, the reference must match bit for bit again.
"""

from __future__ import annotations

import pytest
import torch

from sageattention import _ops
from sageattention.testing.reference import LOG2E, quant_int8_groups, quant_per_block_int8_ref, to_hnd

pytestmark = pytest.mark.gpu

# Quantization contract (sageattention/testing/reference.py): outputs may differ from the
# reference by one integer step only where the K mean differs in its last bits.
ONE_ROUNDING_STEP = 1
LENGTHS = [1, 63, 64, 65, 127, 129, 1000]


@pytest.fixture(autouse=True)
def _needs_gpu_and_build():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not _ops.cuda_ops_available():
        pytest.skip(f"compiled ops not built: {_ops.missing_build_reason()}")


def make(shape_bhld, layout, dtype, *, sliced=False, bias=0.0):
    """Random [B, H, L, D] data in ``layout``; ``sliced`` gives a non-contiguous view."""
    b, h, n, d = shape_bhld
    dims = (b, h, n, d) if layout == "HND" else (b, n, h, d)
    if sliced:  # a slice along dim 1 and the channels of a bigger tensor: last dim still stride 1
        big = (dims[0], dims[1] + 3, dims[2], dims[3] + 16)
        x = torch.randn(big, device="cuda", dtype=dtype)[:, 1:1 + dims[1], :, 8:8 + d]
        assert not x.is_contiguous() and x.stride(-1) == 1
    else:
        x = torch.randn(dims, device="cuda", dtype=dtype)
    # Per-channel bias: the K outliers smoothing is for (SageAttention §3).
    channel_bias = bias * torch.randn(d, device="cuda", dtype=torch.float32)
    with torch.no_grad():
        x += channel_bias.to(dtype)
    return x


def assert_exact(actual, expected, what):
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=0, atol=0, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", LENGTHS)
def test_matches_reference(length, layout, dtype):
    q = make((2, 3, length, 128), layout, dtype)
    k = make((2, 3, length, 128), layout, dtype, bias=4.0)
    ref = quant_per_block_int8_ref(q.cpu(), k.cpu(), tensor_layout=layout)
    ref_q, ref_qs, ref_k, ref_ks, ref_mean = ref

    # Q, and K with the reference's mean: bit for bit.
    out = _ops.quant_qk_per_block_int8(q, k, tensor_layout=layout, k_mean=ref_mean.cuda())
    assert_exact(out[0], ref_q, "q_int8")
    assert_exact(out[1], ref_qs, "q_scale")
    assert_exact(out[2], ref_k, "k_int8 (reference mean)")
    assert_exact(out[3], ref_ks, "k_scale (reference mean)")
    assert out[0].shape == q.shape and out[1].shape == (2, 3, -(-length // 128))

    # K with the kernel's own mean.
    q_int8, q_scale, k_int8, k_scale, k_mean = _ops.quant_qk_per_block_int8(q, k, tensor_layout=layout)
    torch.testing.assert_close(k_mean.cpu(), ref_mean)  # float32 default tolerances: summation order
    step = (k_int8.cpu().int() - ref_k.int()).abs().max().item()
    assert step <= ONE_ROUNDING_STEP
    torch.testing.assert_close(k_scale.cpu(), ref_ks)
    # Fed the kernel's mean, the reference quantizer agrees exactly.
    kh = to_hnd(k.cpu(), layout).float()
    same_k, same_ks = quant_int8_groups(kh - k_mean.cpu(), 64)
    if layout == "NHD":
        same_k = same_k.transpose(1, 2)
    assert_exact(k_int8, same_k, "k_int8 (kernel mean)")
    assert_exact(k_scale, same_ks, "k_scale (kernel mean)")


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("head_dim", [32, 64, 96, 256])
def test_non_contiguous_inputs_and_head_dims(layout, head_dim):
    q = make((1, 4, 200, head_dim), layout, torch.bfloat16, sliced=True)
    k = make((1, 4, 200, head_dim), layout, torch.bfloat16, sliced=True, bias=2.0)
    ref_q, ref_qs, ref_k, ref_ks, ref_mean = quant_per_block_int8_ref(q.cpu(), k.cpu(), tensor_layout=layout,
                                                                      sm_scale=0.1)
    out = _ops.quant_qk_per_block_int8(q, k, tensor_layout=layout, sm_scale=0.1, k_mean=ref_mean.cuda())
    for got, want, what in zip(out[:4], (ref_q, ref_qs, ref_k, ref_ks), ("q_int8", "q_scale", "k_int8", "k_scale")):
        assert_exact(got, want, what)


def test_gqa_and_no_smoothing():
    q = make((2, 8, 77, 64), "HND", torch.float16)
    k = make((2, 2, 77, 64), "HND", torch.float16, bias=3.0)
    ref = quant_per_block_int8_ref(q.cpu(), k.cpu(), smooth_k=False, blkq=64, blkk=32)
    out = _ops.quant_qk_per_block_int8(q, k, smooth_k=False, blkq=64, blkk=32)
    for got, want, what in zip(out, ref, ("q_int8", "q_scale", "k_int8", "k_scale", "k_mean")):
        assert_exact(got, want, what)


def test_all_zero_block_has_scale_zero():
    q = make((1, 2, 300, 64), "HND", torch.float16)
    with torch.no_grad():
        q[:, :, :128] = 0
    q_int8, q_scale = _ops.quant_per_block_int8(q, 128, pre_scale=0.125 * LOG2E)
    assert (q_scale[:, :, 0] == 0).all() and (q_int8[:, :, :128] == 0).all()
    assert (q_scale[:, :, 1:] > 0).all()


def test_runs_on_the_current_stream():
    q = make((2, 4, 512, 128), "NHD", torch.float16)
    expected = _ops.quant_per_block_int8(q, 128, tensor_layout="NHD")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = _ops.quant_per_block_int8(q, 128, tensor_layout="NHD")
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    for a, b in zip(got, expected):
        assert_exact(a, b, "non-default stream")


def test_cuda_graph_replay():
    q = make((1, 2, 256, 64), "HND", torch.bfloat16)
    _ops.quant_per_block_int8(q, 128)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q_int8, q_scale = _ops.quant_per_block_int8(q, 128)
    with torch.no_grad():
        q.copy_(make((1, 2, 256, 64), "HND", torch.bfloat16))
    graph.replay()
    torch.cuda.synchronize()
    ref_q, ref_s = quant_int8_groups(q.cpu().float(), 128)
    assert_exact(q_int8, ref_q, "graph q_int8")
    assert_exact(q_scale, ref_s, "graph q_scale")


def test_opcheck_every_op():
    x = make((2, 3, 130, 64), "NHD", torch.float16)
    mean = torch.randn(2, 3, 1, 64, device="cuda")
    x_int8 = torch.empty(x.shape, dtype=torch.int8, device="cuda")
    scale = torch.empty(2, 3, 3, dtype=torch.float32, device="cuda")
    torch.library.opcheck(torch.ops.sageattention.quant_per_block_int8.default,
                          (x, x_int8, scale, mean, 1.0, 64, "NHD"))
    torch.library.opcheck(torch.ops.sageattention.quant_per_block_int8.default,
                          (x, x_int8, scale, None, 0.18, 64, "NHD"))
    out_mean = torch.empty(2, 3, 1, 64, device="cuda")
    torch.library.opcheck(torch.ops.sageattention.mean_over_tokens.default, (x, out_mean, "NHD"))


def test_compiles_fullgraph():
    q = make((1, 2, 100, 64), "HND", torch.float16)

    def quantize(x):
        return _ops.quant_per_block_int8(x, 64, pre_scale=0.5)

    compiled = torch.compile(quantize, fullgraph=True)
    for got, want in zip(compiled(q), quantize(q)):
        assert_exact(got, want, "torch.compile")


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda x, o, s: (x.float(), o, s, None, 1.0, 64, "HND"), "float16 or bfloat16"),
        (lambda x, o, s: (x, o.float(), s, None, 1.0, 64, "HND"), "x_int8 must be int8"),
        (lambda x, o, s: (x, o, s[:, :1], None, 1.0, 64, "HND"), "scale must have shape"),
        (lambda x, o, s: (x, o, s, None, 1.0, 0, "HND"), "block_size must be in"),
        (lambda x, o, s: (x, o, s, None, 1.0, 64, "BHSD"), "tensor_layout must be"),
        (lambda x, o, s: (x.transpose(2, 3), o, s, None, 1.0, 64, "HND"), "contiguous last dimension"),
    ],
    ids=["dtype", "out-dtype", "scale-shape", "block-size", "layout", "strides"],
)
def test_the_op_itself_rejects_bad_input(args, message):
    x = make((1, 2, 64, 64), "HND", torch.float16)
    out = torch.empty(x.shape, dtype=torch.int8, device="cuda")
    scale = torch.empty(1, 2, 1, device="cuda")
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sageattention.quant_per_block_int8(*args(x, out, scale))


def test_element_offsets_beyond_int32():
    """A tensor of more than 2**31 elements: the tail block's offsets only fit in int64 index math."""
    length = 2**31 // 128 + 200  # [1, 1, L, 128]: 2**31 + 25600 elements
    need = length * 128 * 3  # fp16 input + int8 output, in bytes
    free, _ = torch.cuda.mem_get_info()
    if free < need + (1 << 30):
        pytest.skip(f"needs {need / 2**30:.1f} GiB free GPU memory for a >2**31-element tensor, {free / 2**30:.1f} GiB free")
    x = torch.zeros(1, 1, length, 128, device="cuda", dtype=torch.float16)
    tail = (length - 300) // 64 * 64  # a block boundary ~300 tokens before the end
    with torch.no_grad():
        x[:, :, tail:] = torch.randn(1, 1, length - tail, 128, device="cuda", dtype=torch.float16)
    x_int8, scale = _ops.quant_per_block_int8(x, 64)
    ref_q, ref_s = quant_int8_groups(x[:, :, tail:].cpu().float(), 64)
    assert_exact(x_int8[:, :, tail:], ref_q, "tail q_int8 past 2**31 elements")
    assert_exact(scale[:, :, tail // 64:], ref_s, "tail scales past 2**31 elements")
    assert (scale[:, :, : tail // 64] == 0).all()
