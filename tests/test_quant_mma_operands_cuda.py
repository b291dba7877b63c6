"""``sageattention::quant_mma_operands`` (every operand of the mma.sync attention ops in one call)
against the single ops it fuses, and the channel statistics against an exact emulation.

* The fused op must give the bytes of ``mean_over_tokens`` + ``quant_per_thread_int8`` (Q, K) +
  ``quant_v_fp8_operand`` called one by one: the same kernels run the same jobs, two tensors per
  launch. Compared bit for bit, over the shapes where the kernels take different paths (16-byte
  chunks or single values, register-resident tiles or re-read rows).
* The K mean and the V statistics are float32 sums in a fixed order (csrc/fused/
  quant_v_fp8_operand.cu: 8 token classes t mod 8, each summed in token order, then added in class
  order); ``sums_in_kernel_order`` reproduces that order on CPU, so the means and scales are
  checked bit for bit, whatever the inputs (the per-op tests compare them with the Triton path,
  whose order differs, within tolerances).

GPU tests skip without a GPU or without the op's kernel; the wrapper's argument checks run on CPU.
"""

from __future__ import annotations

import pytest
import torch

from sageattention import _ops
from sageattention.testing.reference import LOG2E, to_hnd

from _opcheck import check_schema_by_bytes
from _qattn_cuda import require_op

#: (q_groups, k_groups) of api._cuda_quantize: per_thread, per_warp.
GROUPS = {"per_thread": (8, 4), "per_warp": (1, 1)}


@pytest.fixture
def gpu():
    require_op("quant_mma_operands")


def sums_in_kernel_order(x_hnd: torch.Tensor) -> torch.Tensor:
    """float32 ``[B, H, D]`` channel sums of ``[B, H, L, D]`` in the kernels' order: tokens split by
    t mod 8, each class summed from +0 in token order, the class sums added in class order."""
    x = x_hnd.float().cpu()
    total = None
    for cls in range(8):
        acc = torch.zeros(x.shape[0], x.shape[1], x.shape[3])
        for t in range(cls, x.shape[2], 8):  # one float32 rounding per addition, in order
            acc = acc + x[:, :, t]
        total = acc if total is None else total + acc
    return total


def test_sums_in_kernel_order_are_float32_sums():
    """The emulation itself (CPU): close to the float64 sum, exact on integers."""
    x = torch.randn(2, 3, 37, 5)
    torch.testing.assert_close(sums_in_kernel_order(x), x.double().sum(2).float(), rtol=1e-5, atol=1e-5)
    ints = torch.randint(-8, 9, (1, 2, 50, 4)).float()
    assert torch.equal(sums_in_kernel_order(ints), ints.sum(2))


def make(shape_bhld, layout, dtype, *, sliced=False, offset=8, bias=0.0):
    """Random [B, H, L, D] data in ``layout`` (a per-channel bias ``bias``); ``sliced``: a strided
    view whose rows start ``offset`` elements into a wider buffer (offset 1: not 16-byte aligned)."""
    b, h, n, d = shape_bhld
    dims = (b, h, n, d) if layout == "HND" else (b, n, h, d)
    values = (torch.randn(dims, device="cuda") + bias * torch.randn(d, device="cuda")).to(dtype)
    if not sliced:
        return values
    big = torch.zeros((dims[0], dims[1] + 3, dims[2], dims[3] + 16), device="cuda", dtype=dtype)
    view = big[:, 1:1 + dims[1], :, offset:offset + d]
    view.copy_(values)
    assert not view.is_contiguous() and view.stride(-1) == 1
    return view


def one_by_one(q, k, v, layout, gran, *, smooth_k, scale_max, smooth_v, d_out, pre):
    """The single ops, as api._cuda_quantize called them before the fused op."""
    q_groups, k_groups = GROUPS[gran]
    k_mean = _ops.mean_over_tokens(k, tensor_layout=layout) if smooth_k else None
    q_i8, q_s = _ops.quant_per_thread_int8(q, block=128, warp=16, groups_per_warp=q_groups, pre_scale=pre,
                                           tensor_layout=layout, head_dim_out=d_out)
    k_i8, k_s = _ops.quant_per_thread_int8(k, block=64, warp=64, groups_per_warp=k_groups, mean=k_mean,
                                           tensor_layout=layout, head_dim_out=d_out)
    v_op = v_s = v_m = None
    if v is not None:
        v_op, v_s, v_m = _ops.quant_v_fp8_operand(v, scale_max=scale_max, smooth_v=smooth_v, tensor_layout=layout,
                                                  head_dim_out=d_out)
    return q_i8, q_s, k_i8, k_s, k_mean, v_op, v_s, v_m


def fused(q, k, v, layout, gran, *, smooth_k, scale_max, smooth_v, d_out, pre):
    q_groups, k_groups = GROUPS[gran]
    return _ops.quant_mma_operands(q, k, v, pre_scale=pre, q_groups_per_warp=q_groups, k_groups_per_warp=k_groups,
                                   smooth_k=smooth_k, scale_max=scale_max, smooth_v=smooth_v, tensor_layout=layout,
                                   head_dim_out=d_out)


NAMES = ("q_int8", "q_scale", "k_int8", "k_scale", "k_mean", "v_operand", "v_scale", "v_mean")


def assert_same(got, want):
    for name, a, b in zip(NAMES, got, want):
        if b is None:
            assert a is None, f"{name}: expected None"
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, f"{name}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        if a.dtype == torch.float8_e4m3fn:
            a, b = a.view(torch.uint8), b.view(torch.uint8)
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("gran", list(GROUPS))
@pytest.mark.parametrize("lq, lk", [(1, 1), (17, 130), (130, 17), (333, 333), (1000, 777)])
def test_matches_the_single_ops(gpu, lq, lk, gran, layout, dtype):
    d = 64
    q = make((2, 4, lq, d), layout, dtype)
    k = make((2, 2, lk, d), layout, dtype, bias=3.0)  # GQA, channel-biased K
    v = make((2, 2, lk, d), layout, dtype, bias=1.0)
    args = dict(smooth_k=True, scale_max=2.25, smooth_v=False, d_out=d, pre=d**-0.5 * LOG2E)
    assert_same(fused(q, k, v, layout, gran, **args), one_by_one(q, k, v, layout, gran, **args))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("head_dim, d_out, offset",
                         [(128, 128, 8), (96, 128, 8), (64, 64, 1), (36, 64, 8), (256, 256, 8)],
                         ids=["hd128", "hd96-padded", "unaligned-rows", "hd36-single-values", "hd256"])
@pytest.mark.parametrize("with_v, smooth_k, smooth_v", [(True, True, True), (True, False, False), (False, True, False)],
                         ids=["smooth-kv", "no-smoothing", "no-v"])
def test_every_kernel_path_and_option(gpu, with_v, smooth_k, smooth_v, head_dim, d_out, offset, layout):
    """Strided rows (16-byte aligned or not), head dims that are / are not multiples of 8 and the
    head-dim padding: the kernels' 16-byte and single-value paths, resident and re-read tiles."""
    q = make((1, 3, 200, head_dim), layout, torch.bfloat16, sliced=True, offset=offset)
    k = make((1, 3, 150, head_dim), layout, torch.bfloat16, sliced=True, offset=offset, bias=2.0)
    v = make((1, 3, 150, head_dim), layout, torch.bfloat16, sliced=True, offset=offset) if with_v else None
    args = dict(smooth_k=smooth_k, scale_max=448.0, smooth_v=smooth_v, d_out=d_out, pre=0.1)
    got = fused(q, k, v, layout, "per_thread", **args)
    assert_same(got, one_by_one(q, k, v, layout, "per_thread", **args))
    assert (got[0][..., head_dim:] == 0).all() and (got[2][..., head_dim:] == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("head_dim, d_out, offset", [(128, 128, 8), (36, 64, 1)],
                         ids=["16-byte-chunks", "single-values"])
@pytest.mark.parametrize("length", [1, 7, 64, 1000])
def test_statistics_are_the_kernel_order_sums(gpu, length, head_dim, d_out, offset, layout):
    """K mean (sum / L), V mean (sum * fl(1 / L)) and V scale, bit for bit from the CPU emulation."""
    k = make((2, 3, length, head_dim), layout, torch.float16, sliced=True, offset=offset, bias=4.0)
    v = make((2, 3, length, head_dim), layout, torch.float16, sliced=True, offset=offset, bias=4.0)
    scale_max = 2.25
    out = fused(k, k, v, layout, "per_thread", smooth_k=True, scale_max=scale_max, smooth_v=True, d_out=d_out,
                pre=1.0)
    k_mean, v_scale, v_mean = out[4], out[6], out[7]
    sums = sums_in_kernel_order(to_hnd(k, layout))
    want_k_mean = sums / torch.full_like(sums, length)  # IEEE float32 division, as the kernel's
    torch.testing.assert_close(k_mean.cpu().squeeze(2), want_k_mean, rtol=0, atol=0)
    torch.testing.assert_close(_ops.mean_over_tokens(k, tensor_layout=layout).cpu().squeeze(2), want_k_mean,
                               rtol=0, atol=0)
    vh = to_hnd(v, layout).float().cpu()
    one = torch.tensor(1.0)
    inv = one / torch.tensor(float(length))  # float32 reciprocals, as the kernels take them
    mean = sums_in_kernel_order(vh) * inv
    absmax = torch.maximum(vh.amax(2) - mean, mean - vh.amin(2))
    scale = absmax * (one / torch.tensor(scale_max))
    pad = d_out - head_dim
    torch.testing.assert_close(v_mean.cpu().squeeze(2), torch.nn.functional.pad(mean, (0, pad)), rtol=0, atol=0)
    torch.testing.assert_close(v_scale.cpu(), torch.nn.functional.pad(scale, (0, pad)), rtol=0, atol=0)


@pytest.mark.gpu
def test_runs_on_the_current_stream(gpu):
    q, k, v = (make((2, 4, 512, 128), "NHD", torch.float16) for _ in range(3))
    args = dict(smooth_k=True, scale_max=448.0, smooth_v=True, d_out=128, pre=0.1)
    want = fused(q, k, v, "NHD", "per_thread", **args)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = fused(q, k, v, "NHD", "per_thread", **args)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert_same(got, want)


def _op_args(smooth):
    q = make((2, 3, 130, 64), "NHD", torch.float16)
    k = make((2, 1, 130, 64), "NHD", torch.float16)  # GQA: one K/V head
    v = torch.randn_like(k)
    return [
        q, k, v,
        torch.empty(2, 130, 3, 128, dtype=torch.int8, device="cuda"),
        torch.empty(2, 3, 2 * 8 * 8, device="cuda"),
        torch.empty(2, 130, 1, 128, dtype=torch.int8, device="cuda"),
        torch.empty(2, 1, 3 * 4, device="cuda"),
        torch.empty(2, 1, 1, 64, device="cuda") if smooth else None,
        torch.empty(2, 1, 128, 192, dtype=torch.float8_e4m3fn, device="cuda"),
        torch.empty(2, 1, 128, device="cuda"),
        torch.empty(2, 1, 1, 128, device="cuda") if smooth else None,
        0.18, 128, 16, 8, 64, 64, 4, 2.25, "NHD",
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("smooth", [True, False])
@pytest.mark.parametrize("check", ["test_faketensor", "test_autograd_registration", "test_aot_dispatch_dynamic"])
def test_opcheck(gpu, check, smooth):
    """opcheck without its test_schema (torch.allclose has no float8_e4m3fn kernel, see
    tests/test_quant_v_fp8_operand_cuda.py::test_opcheck); test_schema_by_bytes does that check."""
    op = torch.ops.sageattention.quant_mma_operands.default
    try:
        torch.library.opcheck(op, tuple(_op_args(smooth)), test_utils=(check,))
    except Exception as exc:  # only torch's missing float8 kernels are tolerated
        if check == "test_aot_dispatch_dynamic" and "Float8_e4m3fn" in str(exc):
            pytest.skip(f"{check} compares the float8 output with a kernel torch lacks: {exc}")
        raise


@pytest.mark.gpu
@pytest.mark.parametrize("smooth", [True, False])
def test_schema_by_bytes(gpu, smooth):
    """What opcheck's test_schema checks, on raw bytes: inputs left alone, every output written."""
    check_schema_by_bytes(torch.ops.sageattention.quant_mma_operands.default, _op_args(smooth))


@pytest.mark.gpu
def test_without_v(gpu):
    args = _op_args(True)
    args[2] = args[8] = args[9] = args[10] = None
    torch.ops.sageattention.quant_mma_operands(*args)
    torch.cuda.synchronize()
    assert torch.isfinite(args[4]).all() and torch.isfinite(args[7]).all()


@pytest.mark.gpu
def test_compiles_fullgraph(gpu):
    q, k, v = (make((1, 2, 100, 64), "HND", torch.float16) for _ in range(3))
    args = dict(smooth_k=True, scale_max=448.0, smooth_v=True, d_out=128, pre=0.1)

    def quantize(q, k, v):
        return fused(q, k, v, "HND", "per_warp", **args)

    compiled = torch.compile(quantize, fullgraph=True)
    assert_same(compiled(q, k, v), quantize(q, k, v))


@pytest.mark.gpu
@pytest.mark.parametrize(
    "index, bad, message",
    [
        (1, lambda t: t.float(), "k must be float16 or bfloat16"),
        (2, lambda t: t.bfloat16(), "v must have q's dtype"),
        (8, lambda t: None, "v needs v_operand and v_scale"),
        (3, lambda t: t[..., :32], "x_int8 must have x's shape"),
        (6, lambda t: t[..., :-1], "scale must have shape"),
        (7, lambda t: t[..., :32], "mean must have shape"),
        (9, lambda t: t[..., :-1], "v_scale must be a contiguous"),
        (18, lambda t: 500.0, "scale_max must be in"),
        (19, lambda t: "BHSD", "tensor_layout must be"),
    ],
    ids=["k-dtype", "v-dtype", "no-operand", "q-out-shape", "k-scale-shape", "k-mean-shape", "v-scale-shape",
         "scale-max", "layout"],
)
def test_the_op_itself_rejects_bad_input(gpu, index, bad, message):
    args = _op_args(True)
    args[index] = bad(args[index])
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sageattention.quant_mma_operands(*args)


@pytest.mark.gpu
def test_v_outputs_need_v(gpu):
    args = _op_args(True)
    args[2] = None
    with pytest.raises(RuntimeError, match="v_operand, v_scale and v_mean need v"):
        torch.ops.sageattention.quant_mma_operands(*args)


def test_fake_kernel_traces_under_fake_tensor_mode():
    """Shapes through the fake kernel: needs the compiled op's schema, not a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if not _ops.cuda_ops_available():
        pytest.skip(f"compiled ops not built: {_ops.missing_build_reason()}")

    with FakeTensorMode():
        q = torch.empty(2, 100, 8, 96, dtype=torch.bfloat16, device="cuda")
        k = torch.empty(2, 70, 2, 96, dtype=torch.bfloat16, device="cuda")
        out = _ops.quant_mma_operands(q, k, torch.empty_like(k), pre_scale=0.1, q_groups_per_warp=8,
                                      k_groups_per_warp=4, smooth_v=True, tensor_layout="NHD", head_dim_out=128)
    shapes = [None if t is None else tuple(t.shape) for t in out]
    assert shapes == [(2, 100, 8, 128), (2, 8, 64), (2, 70, 2, 128), (2, 2, 8), (2, 2, 1, 96), (2, 2, 128, 128),
                      (2, 2, 128), (2, 2, 1, 128)]


# ---- wrapper argument checks: ValueError/TypeError before dispatch, so they run on CPU ----------


def _cpu(*shape, dtype=torch.float16):
    return torch.zeros(shape, dtype=dtype)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: _ops.quant_mma_operands("q", _cpu(1, 2, 8, 16), pre_scale=1.0, q_groups_per_warp=8,
                                         k_groups_per_warp=4), TypeError, "q must be a torch.Tensor"),
        (lambda: _ops.quant_mma_operands(_cpu(1, 2, 8, 16), _cpu(1, 2, 8, 16), pre_scale=1.0, q_groups_per_warp=8,
                                         k_groups_per_warp=4), ValueError, "q must be a CUDA tensor"),
        (lambda: _ops.quant_mma_operands(_cpu(1, 2, 8, 16), _cpu(1, 2, 8, 16), pre_scale=1.0, q_groups_per_warp=8,
                                         k_groups_per_warp=4, tensor_layout="BHSD"), ValueError, "tensor_layout"),
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
        (dict(q_groups_per_warp=3), ValueError, "q_groups_per_warp must be"),
        (dict(k_warp=12), ValueError, "k_warp must be a multiple of 8"),
        (dict(q_block=100), ValueError, "q_block must be a multiple of q_warp"),
        (dict(k_block=64.0), TypeError, "k_block must be an int"),
        (dict(pre_scale=float("inf")), ValueError, "pre_scale must be finite"),
        (dict(scale_max=0.0), ValueError, "scale_max must be in"),
        (dict(smooth_v=1), TypeError, "smooth_v must be a bool"),
        (dict(head_dim_out=32), ValueError, "head_dim_out must be in"),
        (dict(v=None, smooth_v=True), ValueError, "smooth_v needs v"),
    ],
    ids=["groups", "warp", "block", "block-type", "pre-scale", "scale-max", "smooth-type", "head-dim-out", "smooth-v"],
)
def test_wrapper_rejects_bad_arguments(gpu, kwargs, error, message):
    q, k, v = (make((1, 2, 64, 64), "HND", torch.float16) for _ in range(3))
    args = dict(v=v, pre_scale=1.0, q_groups_per_warp=8, k_groups_per_warp=4)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        _ops.quant_mma_operands(q, k, **args)


@pytest.mark.gpu
def test_wrapper_rejects_mismatched_tensors(gpu):
    q, k = (make((1, 2, 64, 64), "HND", torch.float16) for _ in range(2))
    with pytest.raises(ValueError, match="k must have q's device and dtype"):
        _ops.quant_mma_operands(q, k.bfloat16(), pre_scale=1.0, q_groups_per_warp=8, k_groups_per_warp=4)
    with pytest.raises(ValueError, match="v must have k's shape"):
        _ops.quant_mma_operands(q, k, k[:, :1], pre_scale=1.0, q_groups_per_warp=8, k_groups_per_warp=4)
