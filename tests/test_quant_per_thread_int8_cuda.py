"""The compiled per-thread / per-warp INT8 quantizer (``sageattention::quant_per_thread_int8``)
against ``quant_int8_slab_groups`` (the reference) and the Triton quantizer it replaces.

The reference runs on CPU copies: CPU float32 division is IEEE ``a / b``, what the kernel's
``__fdiv_rn`` computes. Every comparison is bit for bit: the mean, where one is used, is passed
in, so no summation order is involved. GPU tests skip without a GPU or without the op's kernel;
the argument checks of the Python wrapper run on CPU.
"""

from __future__ import annotations

import pytest
import torch

from sageattention import _ops
from sageattention.testing.reference import LOG2E, quant_int8_slab_groups, to_hnd

from _qattn_cuda import require_op

#: (block, warp, groups_per_warp, pre_scale, with_mean): the four groupings api._cuda_quantize uses.
GROUPINGS = {
    "q-per-thread": (128, 16, 8, 0.125 * LOG2E, False),
    "k-per-thread": (64, 64, 4, 1.0, True),
    "q-per-warp": (128, 16, 1, 0.125 * LOG2E, False),
    "k-per-warp": (64, 64, 1, 1.0, True),
}
LENGTHS = [1, 7, 15, 16, 17, 63, 64, 65, 127, 129, 1000]


@pytest.fixture
def gpu():
    require_op("quant_per_thread_int8")


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
    with torch.no_grad():  # per-channel bias: the K outliers smoothing is for
        x += (bias * torch.randn(d, device="cuda")).to(dtype)
    return x


def expected(x, layout, block, warp, groups, pre, mean):
    """Reference int8 (x's layout) and scale, from CPU float32."""
    xh = to_hnd(x.cpu(), layout).float()
    if mean is not None:
        xh = xh - mean.cpu()
    q, s = quant_int8_slab_groups(xh * pre, block=block, slab=warp, groups_per_slab=groups)
    return (q.transpose(1, 2) if layout == "NHD" else q), s


def assert_exact(actual, want, what):
    torch.testing.assert_close(actual.cpu(), want.cpu(), rtol=0, atol=0, msg=lambda m: f"{what}: {m}")


def run(x, layout, grouping, *, head_dim_out=None, mean=None):
    block, warp, groups, pre, _ = GROUPINGS[grouping]
    return _ops.quant_per_thread_int8(x, block=block, warp=warp, groups_per_warp=groups, pre_scale=pre, mean=mean,
                                      tensor_layout=layout, head_dim_out=head_dim_out)


def channel_mean(x, layout):
    return to_hnd(x, layout).float().mean(dim=2, keepdim=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("grouping", list(GROUPINGS))
def test_matches_reference(gpu, grouping, length, layout, dtype):
    block, warp, groups, pre, with_mean = GROUPINGS[grouping]
    x = make((2, 3, length, 128), layout, dtype, bias=4.0 if with_mean else 0.0)
    mean = channel_mean(x, layout) if with_mean else None
    x_int8, scale = run(x, layout, grouping, mean=mean)
    want_q, want_s = expected(x, layout, block, warp, groups, pre, mean)
    assert x_int8.shape == x.shape and scale.shape == want_s.shape
    assert_exact(x_int8, want_q, "x_int8")
    assert_exact(scale, want_s, "scale")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("head_dim", [32, 64, 96, 256])
@pytest.mark.parametrize("grouping", list(GROUPINGS))
def test_matches_triton_on_strided_inputs_and_padded_head_dims(gpu, grouping, head_dim, layout):
    from sageattention.triton.quant_per_thread_int8 import quant_per_thread_int8 as triton_quant

    block, warp, groups, pre, with_mean = GROUPINGS[grouping]
    x = make((2, 4, 200, head_dim), layout, torch.bfloat16, sliced=True, bias=2.0 if with_mean else 0.0)
    mean = channel_mean(x, layout) if with_mean else None
    d_out = max(head_dim, 128)  # the attention ops' head-dim padding
    got = run(x, layout, grouping, mean=mean, head_dim_out=d_out)
    want = triton_quant(x, block=block, warp=warp, groups_per_warp=groups, pre_scale=pre, mean=mean,
                        tensor_layout=layout, head_dim_out=d_out)
    assert got[0].shape == want[0].shape and got[0].shape[-1] == d_out
    assert_exact(got[0], want[0], "x_int8 vs triton")
    assert_exact(got[1], want[1], "scale vs triton")
    assert (got[0][..., head_dim:] == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("head_dim, head_dim_out, offset", [(128, 128, 8), (64, 64, 1), (36, 64, 8)],
                         ids=["16-byte-chunks", "unaligned-rows", "hd36"])
@pytest.mark.parametrize("block, warp, groups", [(128, 16, 8), (64, 64, 4), (256, 256, 2), (512, 512, 1)],
                         ids=["q-tile", "k-tile", "slab256", "slab512"])
def test_kernel_paths_match_reference(gpu, block, warp, groups, head_dim, head_dim_out, offset, layout):
    """The kernel's paths (csrc/fused/quant_per_thread_int8.cu): 16-byte chunks, or single values
    for rows that are not 16-byte aligned or D % 8 != 0; tiles of several slabs held in registers,
    or slabs too long for that (256, 512 rows) whose rows are read twice."""
    dims = (1, 3, 700, head_dim) if layout == "HND" else (1, 700, 3, head_dim)
    big = torch.zeros(dims[0], dims[1] + 1, dims[2], dims[3] + 16, device="cuda", dtype=torch.bfloat16)
    x = big[:, 1:, :, offset:offset + head_dim]
    x.copy_(torch.randn(dims, device="cuda") + 2.0 * torch.randn(head_dim, device="cuda"))
    mean = channel_mean(x, layout)
    got = _ops.quant_per_thread_int8(x, block=block, warp=warp, groups_per_warp=groups, pre_scale=0.7, mean=mean,
                                     tensor_layout=layout, head_dim_out=head_dim_out)
    want_q, want_s = expected(x, layout, block, warp, groups, 0.7, mean)
    assert_exact(got[0][..., :head_dim], want_q, "x_int8")
    assert_exact(got[1], want_s, "scale")
    assert (got[0][..., head_dim:] == 0).all()


@pytest.mark.gpu
def test_element_offsets_beyond_int32(gpu):
    """A tensor of more than 2**31 elements: the tail tiles' offsets only fit in int64 index math.
    Slabs are quantized independently, so the tail equals the op run on the tail alone."""
    length = 2**31 // 128 + 200  # [1, 1, L, 128]: 2**31 + 25600 elements
    need = length * 128 * 3  # fp16 input + int8 output, in bytes
    free, _ = torch.cuda.mem_get_info()
    if free < need + (1 << 30):
        pytest.skip(f"needs {need / 2**30:.1f} GiB free GPU memory, {free / 2**30:.1f} GiB free")
    x = torch.zeros(1, 1, length, 128, device="cuda", dtype=torch.float16)
    tail = (length - 300) // 128 * 128  # a 128-row tile boundary ~300 tokens before the end
    with torch.no_grad():
        x[:, :, tail:] = torch.randn(1, 1, length - tail, 128, device="cuda", dtype=torch.float16)
    x_int8, scale = run(x, "HND", "q-per-thread")
    want_q, want_s = run(x[:, :, tail:].contiguous(), "HND", "q-per-thread")
    assert_exact(x_int8[:, :, tail:], want_q, "tail x_int8 past 2**31 elements")
    assert_exact(scale[:, :, tail // 16 * 8:], want_s, "tail scales past 2**31 elements")


@pytest.mark.gpu
def test_all_zero_groups_have_scale_zero(gpu):
    x = make((1, 2, 100, 64), "HND", torch.float16)
    with torch.no_grad():
        x[:, :, 16:32] = 0  # the second 16-row slab: all 8 Q groups
        x[:, :, 3::8] = 0  # group 3 of every slab
    x_int8, scale = run(x, "HND", "q-per-thread")
    groups = scale.view(1, 2, -1, 8)  # [B, H, slab, group]
    assert (groups[:, :, 1] == 0).all() and (groups[:, :, :, 3] == 0).all()
    assert (groups[:, :, 7:] == 0).all()  # slabs 7 (rows 112..127) past L = 100: padding
    assert (groups[:, :, 0, :3] > 0).all()
    assert (x_int8[:, :, 16:32] == 0).all()


@pytest.mark.gpu
def test_gqa_shapes_and_bf16_channel_bias(gpu):
    k = make((2, 2, 333, 64), "NHD", torch.bfloat16, bias=8.0)
    mean = channel_mean(k, "NHD")
    got = run(k, "NHD", "k-per-thread", mean=mean)
    want = expected(k, "NHD", 64, 64, 4, 1.0, mean)
    assert_exact(got[0], want[0], "k_int8")
    assert_exact(got[1], want[1], "k_scale")
    assert got[1].shape == (2, 2, 6 * 4)


@pytest.mark.gpu
def test_runs_on_the_current_stream(gpu):
    q = make((2, 4, 512, 128), "NHD", torch.float16)
    want = run(q, "NHD", "q-per-thread")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = run(q, "NHD", "q-per-thread")
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    for a, b in zip(got, want):
        assert_exact(a, b, "non-default stream")


@pytest.mark.gpu
def test_opcheck(gpu):
    x = make((2, 3, 130, 64), "NHD", torch.float16)
    mean = torch.randn(2, 3, 1, 64, device="cuda")
    x_int8 = torch.empty(2, 130, 3, 128, dtype=torch.int8, device="cuda")
    scale = torch.empty(2, 3, 3 * 4, dtype=torch.float32, device="cuda")
    op = torch.ops.sageattention.quant_per_thread_int8.default
    torch.library.opcheck(op, (x, x_int8, scale, mean, 1.0, 64, 64, 4, "NHD"))
    q_scale = torch.empty(2, 3, 2 * 8 * 8, dtype=torch.float32, device="cuda")
    torch.library.opcheck(op, (x, x_int8, q_scale, None, 0.18, 128, 16, 8, "NHD"))


@pytest.mark.gpu
def test_compiles_fullgraph(gpu):
    q = make((1, 2, 100, 64), "HND", torch.float16)

    def quantize(x):
        return run(x, "HND", "q-per-thread", head_dim_out=128)

    compiled = torch.compile(quantize, fullgraph=True)
    for got, want in zip(compiled(q), quantize(q)):
        assert_exact(got, want, "torch.compile")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "args, message",
    [
        (lambda x, o, s: (x.float(), o, s, None, 1.0, 64, 64, 4, "HND"), "x must be float16 or bfloat16"),
        (lambda x, o, s: (x, o.float(), s, None, 1.0, 64, 64, 4, "HND"), "x_int8 must be int8"),
        (lambda x, o, s: (x, o[..., :32], s, None, 1.0, 64, 64, 4, "HND"), "x_int8 must have x's shape"),
        (lambda x, o, s: (x, o, s[:, :, :-1], None, 1.0, 64, 64, 4, "HND"), "scale must have shape"),
        (lambda x, o, s: (x, o, s, None, 1.0, 64, 12, 4, "HND"), "warp must be a multiple of 8"),
        (lambda x, o, s: (x, o, s, None, 1.0, 96, 64, 4, "HND"), "block must be a multiple of warp"),
        (lambda x, o, s: (x, o, s, None, 1.0, 64, 64, 3, "HND"), "groups_per_warp must be"),
        (lambda x, o, s: (x, o, s, torch.zeros(1, 2, 1, 32, device="cuda"), 1.0, 64, 64, 4, "HND"),
         "mean must have shape"),
        (lambda x, o, s: (x, o, s, None, 1.0, 64, 64, 4, "BHSD"), "tensor_layout must be"),
        (lambda x, o, s: (x.transpose(2, 3), o, s, None, 1.0, 64, 64, 4, "HND"), "contiguous last dimension"),
    ],
    ids=["dtype", "out-dtype", "out-shape", "scale-shape", "warp", "block", "groups", "mean", "layout", "strides"],
)
def test_the_op_itself_rejects_bad_input(gpu, args, message):
    x = make((1, 2, 64, 64), "HND", torch.float16)
    out = torch.empty(x.shape, dtype=torch.int8, device="cuda")
    scale = torch.empty(1, 2, 4, device="cuda")
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sageattention.quant_per_thread_int8(*args(x, out, scale))


def test_fake_kernel_traces_under_fake_tensor_mode():
    """Shapes through the fake kernel: needs the compiled op's schema, not a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if not _ops.cuda_ops_available():
        pytest.skip(f"compiled ops not built: {_ops.missing_build_reason()}")

    with FakeTensorMode():
        x = torch.empty(2, 100, 3, 64, dtype=torch.float16, device="cuda")
        x_int8, scale = run(x, "NHD", "q-per-thread", head_dim_out=128)
    assert x_int8.shape == (2, 100, 3, 128) and scale.shape == (2, 3, 8 * 8)


# ---- wrapper argument checks: ValueError/TypeError before dispatch, so they run on CPU ----------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: _ops.quant_per_thread_int8("q", block=128, warp=16, groups_per_warp=8), TypeError,
         "x must be a torch.Tensor"),
        (lambda: _ops.quant_per_thread_int8(torch.zeros(1, 2, 8, 16, dtype=torch.float16), block=128, warp=16,
                                            groups_per_warp=8), ValueError, "x must be a CUDA tensor"),
        (lambda: _ops.quant_per_thread_int8(torch.zeros(1, 2, 8, 16, dtype=torch.float16), block=128, warp=16,
                                            groups_per_warp=8, tensor_layout="BHSD"), ValueError, "tensor_layout"),
    ],
    ids=["type", "device", "layout"],
)
def test_wrapper_rejects_bad_input_on_cpu(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(block=128, warp=12, groups_per_warp=8), ValueError, "warp must be a multiple of 8"),
        (dict(block=100, warp=16, groups_per_warp=8), ValueError, "block must be a multiple of warp"),
        (dict(block=128, warp=16, groups_per_warp=3), ValueError, "groups_per_warp must be"),
        (dict(block=128.0, warp=16, groups_per_warp=8), TypeError, "block must be an int"),
        (dict(block=128, warp=16, groups_per_warp=8, head_dim_out=32), ValueError, "head_dim_out must be in"),
        (dict(block=128, warp=16, groups_per_warp=8, pre_scale=float("nan")), ValueError, "pre_scale must be finite"),
        (dict(block=64, warp=64, groups_per_warp=4, mean=torch.zeros(1, 2, 1, 64)), ValueError, "mean must be on"),
    ],
    ids=["warp", "block", "groups", "block-type", "head-dim-out", "pre-scale", "mean-device"],
)
def test_wrapper_rejects_bad_arguments(gpu, kwargs, error, message):
    x = make((1, 2, 64, 64), "HND", torch.float16)
    with pytest.raises(error, match=message):
        _ops.quant_per_thread_int8(x, **kwargs)
