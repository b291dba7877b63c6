"""The compiled V -> FP8 operand quantizer (``sageattention::quant_v_fp8_operand``) against the
path it replaces: Triton ``quant_per_channel_fp8`` followed by ``_ops.fp8_v_operand``.

Without smoothing the two must give the same bytes and scales. With ``smooth_v`` the mean is a
float32 sum taken in another order, so the inputs are integer-valued where exactness is checked
(every order then gives the same sum); on random inputs the bytes may differ by one e4m3 step
where the means differ in their last bits. GPU tests skip without a GPU or without the op's
kernel; the argument checks of the Python wrapper run on CPU.
"""

from __future__ import annotations

import pytest
import torch

from sageattention import _ops

from _opcheck import check_schema_by_bytes
from _qattn_cuda import require_op

LENGTHS = [1, 15, 16, 17, 63, 64, 65, 127, 1000]
SCALE_MAX = [448.0, 2.25]  # api._FP8_V_SCALE_MAX: fp32 accumulation / SageAttention2++


@pytest.fixture
def gpu():
    require_op("quant_v_fp8_operand")


def make(shape_bhld, layout, dtype, *, sliced=False, integers=False, offset=8):
    """``sliced``: a view into a wider buffer whose rows start ``offset`` channels in (1: rows
    not 16-byte aligned, the kernels' single-value path)."""
    b, h, n, d = shape_bhld
    dims = (b, h, n, d) if layout == "HND" else (b, n, h, d)
    big = (dims[0], dims[1] + 3, dims[2], dims[3] + 16) if sliced else dims
    if integers:  # exactly summable in float32 in any order
        x = torch.randint(-16, 17, big, device="cuda").to(dtype)
    else:
        x = (torch.randn(big, device="cuda") * 3 + torch.randn(big[-1], device="cuda")).to(dtype)
    if sliced:
        x = x[:, 1:1 + dims[1], :, offset:offset + d]
        assert not x.is_contiguous() and x.stride(-1) == 1
    return x


def triton_path(v, layout, scale_max, smooth_v, d_out):
    from sageattention.triton.quant_per_channel_fp8 import quant_per_channel_fp8

    v8, scale, mean = quant_per_channel_fp8(v, tensor_layout=layout, scale_max=scale_max, smooth_v=smooth_v,
                                            head_dim_out=d_out)
    return _ops.fp8_v_operand(v8, layout), scale, mean


def assert_same_bytes(actual, want, what):
    torch.testing.assert_close(actual.view(torch.uint8).cpu(), want.view(torch.uint8).cpu(), rtol=0, atol=0,
                               msg=lambda m: f"{what}: {m}")


def assert_exact(actual, want, what):
    torch.testing.assert_close(actual.cpu(), want.cpu(), rtol=0, atol=0, msg=lambda m: f"{what}: {m}")


def run(v, layout, scale_max, smooth_v, d_out):
    return _ops.quant_v_fp8_operand(v, scale_max=scale_max, smooth_v=smooth_v, tensor_layout=layout,
                                    head_dim_out=d_out)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("scale_max", SCALE_MAX)
def test_matches_triton_path(gpu, scale_max, length, layout, dtype):
    v = make((2, 3, length, 128), layout, dtype)
    operand, scale, mean = run(v, layout, scale_max, False, None)
    want_operand, want_scale, _ = triton_path(v, layout, scale_max, False, None)
    assert operand.shape == (2, 3, 128, -(-length // 64) * 64) and operand.dtype == torch.float8_e4m3fn
    assert mean is None
    assert_exact(scale, want_scale, "v_scale")
    assert_same_bytes(operand, want_operand, "v_operand")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", [1, 17, 200])
@pytest.mark.parametrize("scale_max", SCALE_MAX)
def test_smooth_v_integer_inputs_exact(gpu, scale_max, length, layout):
    v = make((2, 2, length, 64), layout, torch.bfloat16, integers=True)
    operand, scale, mean = run(v, layout, scale_max, True, 128)
    want_operand, want_scale, want_mean = triton_path(v, layout, scale_max, True, 128)
    assert mean.shape == (2, 2, 1, 128)
    assert_exact(mean, want_mean, "v_mean")
    assert_exact(scale, want_scale, "v_scale")
    assert_same_bytes(operand, want_operand, "v_operand")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_smooth_v_random_inputs_within_one_step(gpu, layout):
    v = make((2, 3, 777, 128), layout, torch.float16)
    operand, scale, mean = run(v, layout, 2.25, True, None)
    want_operand, want_scale, want_mean = triton_path(v, layout, 2.25, True, None)
    torch.testing.assert_close(mean, want_mean)  # float32 tolerances: summation order only
    torch.testing.assert_close(scale, want_scale)
    a, b = operand.float(), want_operand.float()
    # Adjacent e4m3 values differ by at most 2^-3 of the larger magnitude (2^-9 among subnormals).
    step = torch.maximum(a.abs(), b.abs()) * 0.125 + 2.0**-9
    assert ((a - b).abs() <= step).all()
    assert (a != b).float().mean().item() < 0.01


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("head_dim, d_out, offset", [(32, 64, 8), (64, 64, 8), (96, 128, 8), (128, 128, 8),
                                                    (256, 256, 8), (36, 64, 8), (128, 128, 1)],
                         ids=["hd32", "hd64", "hd96", "hd128", "hd256", "hd36", "unaligned-rows"])
def test_strided_inputs_and_padded_head_dims(gpu, head_dim, d_out, offset, layout):
    v = make((1, 4, 300, head_dim), layout, torch.bfloat16, sliced=True, offset=offset)
    operand, scale, _ = run(v, layout, 448.0, False, d_out)
    want_operand, want_scale, _ = triton_path(v, layout, 448.0, False, d_out)
    assert operand.shape == (1, 4, d_out, 320)
    assert_exact(scale, want_scale, "v_scale")
    assert_same_bytes(operand, want_operand, "v_operand")
    assert (scale[..., head_dim:] == 0).all() and (operand.view(torch.uint8)[:, :, head_dim:] == 0).all()


@pytest.mark.gpu
def test_zero_channels_and_token_padding(gpu):
    v = make((1, 2, 100, 64), "HND", torch.float16)
    with torch.no_grad():
        v[..., 5] = 0
    operand, scale, _ = run(v, "HND", 448.0, False, None)
    assert (scale[..., 5] == 0).all() and (scale[..., :5] > 0).all()
    raw = operand.view(torch.uint8)
    assert (raw[:, :, 5] == 0).all()
    # Tokens 100..127 are padding; position p of a 16-group holds token perm[p], so compare by token.
    perm = torch.tensor(_ops.FP8_V_TOKEN_PERMUTATION, device="cuda")
    index = (torch.arange(128, device="cuda") // 16) * 16 + perm.repeat(8)
    tokens_at = torch.empty_like(index)
    tokens_at[index] = torch.arange(128, device="cuda")
    assert (raw[..., tokens_at[100:]] == 0).all()
    # Channel c of token 0 sits at position 0 and equals e4m3(v / scale): the layout, independent of the Triton path.
    want = (v[:, :, 0].float() / torch.where(scale > 0, scale, 1)).clamp(-448, 448).to(torch.float8_e4m3fn)
    assert_same_bytes(operand[..., 0].contiguous(), want, "token 0")


@pytest.mark.gpu
def test_element_offsets_beyond_int32(gpu):
    """More than 2**31 elements: the tail's offsets only fit in int64 index math. V is zero but
    for a tail with both signs in every channel, so the scales are the tail's and the tail's
    operand columns equal the op run on the tail alone (it starts at a 64-token group)."""
    length = 2**31 // 128 + 200  # [1, 1, L, 128]
    need = length * 128 * 3  # fp16 input + fp8 operand, in bytes
    free, _ = torch.cuda.mem_get_info()
    if free < need + (1 << 30):
        pytest.skip(f"needs {need / 2**30:.1f} GiB free GPU memory, {free / 2**30:.1f} GiB free")
    v = torch.zeros(1, 1, length, 128, device="cuda", dtype=torch.float16)
    tail = (length - 300) // 64 * 64
    with torch.no_grad():
        v[:, :, tail:] = torch.randn(1, 1, length - tail, 128, device="cuda", dtype=torch.float16)
    operand, scale, _ = run(v, "HND", 448.0, False, None)
    want_operand, want_scale, _ = run(v[:, :, tail:].contiguous(), "HND", 448.0, False, None)
    assert_exact(scale, want_scale, "v_scale")
    assert_same_bytes(operand[..., tail:].contiguous(), want_operand, "tail operand past 2**31 elements")


@pytest.mark.gpu
def test_no_tokens_gives_zero_scales(gpu):
    v = torch.empty(1, 2, 0, 64, device="cuda", dtype=torch.float16)
    operand, scale, mean = run(v, "HND", 448.0, True, None)
    assert operand.shape == (1, 2, 64, 0) and (scale == 0).all() and (mean == 0).all()


@pytest.mark.gpu
def test_runs_on_the_current_stream(gpu):
    v = make((2, 4, 512, 128), "NHD", torch.float16)
    want = run(v, "NHD", 448.0, True, None)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = run(v, "NHD", 448.0, True, None)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert_same_bytes(got[0], want[0], "operand")
    assert_exact(got[1], want[1], "scale")


def _op_args(layout, smooth_v):
    v = make((2, 3, 130, 64), layout, torch.float16)
    operand = torch.empty(2, 3, 128, 192, dtype=torch.float8_e4m3fn, device="cuda")
    scale = torch.empty(2, 3, 128, device="cuda")
    mean = torch.empty(2, 3, 1, 128, device="cuda") if smooth_v else None
    return [v, operand, scale, mean, 2.25, layout]


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("smooth_v", [True, False])
@pytest.mark.parametrize("check", ["test_faketensor", "test_autograd_registration", "test_aot_dispatch_dynamic"])
def test_opcheck(gpu, check, layout, smooth_v):
    """opcheck without its test_schema (torch.allclose has no float8_e4m3fn kernel, see
    tests/test_qk_int8_sv_f8_attn_cuda.py::test_opcheck); test_schema_by_bytes does that check."""
    op = torch.ops.sageattention.quant_v_fp8_operand.default
    try:
        torch.library.opcheck(op, tuple(_op_args(layout, smooth_v)), test_utils=(check,))
    except Exception as exc:  # only torch's missing float8 kernels are tolerated
        if check == "test_aot_dispatch_dynamic" and "Float8_e4m3fn" in str(exc):
            pytest.skip(f"{check} compares the float8 output with a kernel torch lacks: {exc}")
        raise


@pytest.mark.gpu
@pytest.mark.parametrize("smooth_v", [True, False])
def test_schema_by_bytes(gpu, smooth_v):
    """What opcheck's test_schema checks, on raw bytes: v is left alone, every output is written."""
    check_schema_by_bytes(torch.ops.sageattention.quant_v_fp8_operand.default, _op_args("NHD", smooth_v))


@pytest.mark.gpu
def test_compiles_fullgraph(gpu):
    v = make((1, 2, 100, 64), "HND", torch.float16)

    def quantize(x):
        return run(x, "HND", 448.0, True, 128)

    compiled = torch.compile(quantize, fullgraph=True)
    for got, want in zip(compiled(v), quantize(v)):
        assert_same_bytes(got, want, "torch.compile")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "index, bad, message",
    [
        (0, lambda t: t.float(), "v must be float16 or bfloat16"),
        (0, lambda t: t.transpose(2, 3), "v must have a contiguous last dimension"),
        (1, lambda t: t.view(torch.uint8), "v_operand must be float8_e4m3fn"),
        (1, lambda t: t[..., :128], "v_operand must have shape"),
        (1, lambda t: t[:, :, :32], "v_operand must have shape"),
        (1, lambda t: t.transpose(0, 1), "v_operand must have shape"),
        (2, lambda t: t[..., :-1], "v_scale must be a contiguous"),
        (2, lambda t: t.double(), "v_scale must be float32"),
        (3, lambda t: t[..., :-1], "v_mean must be a contiguous"),
        (4, lambda t: 500.0, "scale_max must be in"),
        (5, lambda t: "BHSD", "tensor_layout must be"),
    ],
    ids=["dtype", "strides", "operand-dtype", "operand-length", "operand-dim", "operand-batch", "scale-shape",
         "scale-dtype", "mean-shape", "scale-max", "layout"],
)
def test_the_op_itself_rejects_bad_input(gpu, index, bad, message):
    args = _op_args("HND", True)
    args[index] = bad(args[index])
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sageattention.quant_v_fp8_operand(*args)


def test_fake_kernel_traces_under_fake_tensor_mode():
    """Shapes through the fake kernel: needs the compiled op's schema, not a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if not _ops.cuda_ops_available():
        pytest.skip(f"compiled ops not built: {_ops.missing_build_reason()}")

    with FakeTensorMode():
        v = torch.empty(2, 100, 3, 96, dtype=torch.bfloat16, device="cuda")
        operand, scale, mean = run(v, "NHD", 2.25, True, 128)
    assert operand.shape == (2, 3, 128, 128) and scale.shape == (2, 3, 128) and mean.shape == (2, 3, 1, 128)


# ---- wrapper argument checks: ValueError/TypeError before dispatch, so they run on CPU ----------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: _ops.quant_v_fp8_operand([1.0]), TypeError, "v must be a torch.Tensor"),
        (lambda: _ops.quant_v_fp8_operand(torch.zeros(1, 2, 8, 16, dtype=torch.float16)), ValueError,
         "v must be a CUDA tensor"),
        (lambda: _ops.quant_v_fp8_operand(torch.zeros(1, 2, 8, 16), tensor_layout="BHSD"), ValueError,
         "tensor_layout"),
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
        (dict(scale_max=0.0), ValueError, "scale_max must be in"),
        (dict(scale_max=449.0), ValueError, "scale_max must be in"),
        (dict(scale_max="448"), TypeError, "scale_max must be a float"),
        (dict(smooth_v=1), TypeError, "smooth_v must be a bool"),
        (dict(head_dim_out=32), ValueError, "head_dim_out must be in"),
        (dict(head_dim_out=512), ValueError, "head_dim_out must be in"),
    ],
    ids=["scale-max-zero", "scale-max-big", "scale-max-type", "smooth-type", "head-dim-small", "head-dim-big"],
)
def test_wrapper_rejects_bad_arguments(gpu, kwargs, error, message):
    v = make((1, 2, 64, 64), "HND", torch.float16)
    with pytest.raises(error, match=message):
        _ops.quant_v_fp8_operand(v, **kwargs)
