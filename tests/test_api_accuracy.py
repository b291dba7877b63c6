"""End-to-end accuracy of the public Triton entry points against the float64 reference.

Each case checks ``sageattention.testing.metrics.assert_close_to_reference``: the output against
exact attention, against the scheme's floors (TOLERANCES) and against a PyTorch emulation of the
same quantization (kernel error <= factor x emulation error + noise). Sizes are small so the
interpreter (CPU CI) runs each case in about a second; on a GPU the same cases run for real.
"""

from __future__ import annotations

import pytest
import torch

import sageattention as sa
from sageattention.testing.emulation import (
    attn_qk_int8_pv_fp8_emulated,
    attn_qk_int8_pv_fp16_emulated,
    emulation_error,
    relative_max_error,
)
from sageattention.testing.metrics import LSE_MAX_ABS_ERROR, assert_close_to_reference
from sageattention.testing.reference import (
    attention_ref,
    quant_per_block_int8_ref,
    quant_v_per_channel_fp8_ref,
    to_hnd,
)
from sageattention.triton.attn_qk_int8_pv_fp16 import _attn_qk_int8_kernel

SCHEMES = {"fp16": ("int8", "fp16", "fp32"), "fp8": ("int8", "fp8", "fp32")}
FUNCTIONS = {"fp16": sa.sageattn_qk_int8_pv_fp16_triton, "fp8": sa.sageattn_qk_int8_pv_fp8_triton}


def _shape(b, h, n, d, layout):
    return (b, h, n, d) if layout == "HND" else (b, n, h, d)


def make_qkv(device, *, layout="HND", b=1, hq=2, hkv=2, lq=64, lk=None, d=64, dtype=torch.float16, kind="randn"):
    lk = lq if lk is None else lk
    q = torch.randn(_shape(b, hq, lq, d, layout), device=device)
    k = torch.randn(_shape(b, hkv, lk, d, layout), device=device)
    v = torch.randn(_shape(b, hkv, lk, d, layout), device=device)
    if kind == "biased_k":
        # Channel-biased K (SageAttention §3.2): a per-channel offset shared by every token.
        k = k + 4.0 * torch.randn(d, device=device)
    elif kind == "outliers":
        for t in (q, k, v):
            flat = t.view(-1)
            idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // 500),), device=device)
            flat[idx] = 1e4 * torch.sign(torch.randn(idx.numel(), device=device))
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _skip_fp8_if_unsupported(pv):
    if pv == "fp8" and torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 P·V needs sm89+ (Triton has no e4m3 dot before)")


def emulate(q, k, v, *, pv, layout, is_causal, sm_scale=None, smooth_v=False):
    """The same quantization in PyTorch (reference quantizers + the kernel emulation)."""
    d = q.shape[-1]
    pad = lambda t: torch.nn.functional.pad(t, (0, (64 if d <= 64 else 128 if d <= 128 else 256) - d))  # noqa: E731
    q_i8, q_s, k_i8, k_s, _ = quant_per_block_int8_ref(q, k, tensor_layout=layout, sm_scale=sm_scale)
    # Walk the same key blocks as the kernel's last launch (P is rounded at each block's running max).
    block_n = _attn_qk_int8_kernel.best_config.kwargs["BLOCK_N"]
    if pv == "fp16":
        out, _ = attn_qk_int8_pv_fp16_emulated(
            pad(q_i8), pad(k_i8), pad(v.to(torch.float16)), q_s, k_s, tensor_layout=layout, is_causal=is_causal,
            block_n=block_n,
        )
    else:
        v8, v_s, v_mean = quant_v_per_channel_fp8_ref(pad(v), tensor_layout=layout, smooth_v=smooth_v)
        out, _ = attn_qk_int8_pv_fp8_emulated(
            pad(q_i8), pad(k_i8), v8, q_s, k_s, v_s, tensor_layout=layout, is_causal=is_causal, block_n=block_n,
        )
        if smooth_v:  # rows of P sum to 1: the V mean is added back to every output row
            vm = v_mean.repeat_interleave(q_i8.shape[1 if layout == "HND" else 2] // v_mean.shape[1], dim=1)
            out = out + (vm if layout == "HND" else vm.transpose(1, 2))
    return out[..., :d]


def check(q, k, v, *, pv, layout="HND", is_causal=False, kind="randn", **kwargs):
    out = FUNCTIONS[pv](q, k, v, tensor_layout=layout, is_causal=is_causal, **kwargs)
    assert out.shape == q.shape and out.dtype == q.dtype
    ref, _ = attention_ref(q, k, v, tensor_layout=layout, is_causal=is_causal, sm_scale=kwargs.get("sm_scale"))
    emu = emulate(q, k, v, pv=pv, layout=layout, is_causal=is_causal, sm_scale=kwargs.get("sm_scale"),
                  smooth_v=kwargs.get("smooth_v", False))
    # Direct agreement with the emulation: the rel-L1 rule below alone is vacuous where the scheme
    # itself is inaccurate ("outliers": an all-zero output would pass it).
    _, failure = emulation_error(out, emu, "fp8" if pv == "fp8" else "fp32")
    assert failure is None, f"{pv} {layout}: API output: {failure}"
    return assert_close_to_reference(
        out, ref, emulated=emu, scheme=SCHEMES[pv], inputs=kind, context=f"{pv} {layout} {tuple(q.shape)}"
    )


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("length", [1, 17, 64, 65, 130])
def test_lengths_and_layouts(pv, layout, length, device):
    _skip_fp8_if_unsupported(pv)
    dtype = torch.float16 if length % 2 else torch.bfloat16
    check(*make_qkv(device, layout=layout, lq=length, dtype=dtype), pv=pv, layout=layout)


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
def test_gqa_8_to_1(pv, device):
    _skip_fp8_if_unsupported(pv)
    check(*make_qkv(device, hq=8, hkv=1, lq=65), pv=pv)


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
@pytest.mark.parametrize("lq, lk", [(17, 130), (130, 17), (65, 65)])
def test_causal(pv, lq, lk, device):
    _skip_fp8_if_unsupported(pv)
    check(*make_qkv(device, lq=lq, lk=lk, layout="NHD"), pv=pv, layout="NHD", is_causal=True)


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
def test_non_contiguous_inputs(pv, device):
    _skip_fp8_if_unsupported(pv)
    q, k, v = (t[..., ::2] for t in make_qkv(device, lq=65, d=128))  # D 64 at last-dim stride 2
    assert q.stride(-1) == 2
    check(q, k, v, pv=pv)
    q2, k2, v2 = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in make_qkv(device, lq=33))
    check(q2, k2, v2, pv=pv)  # HND view of NHD storage


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
@pytest.mark.parametrize("d", [40, 96, 200])
def test_padded_head_dims(pv, d, device):
    _skip_fp8_if_unsupported(pv)
    # sm_scale below the default: the explicit value must reach the kernel (the reference uses it).
    check(*make_qkv(device, lq=33, d=d), pv=pv, sm_scale=0.8 * d**-0.5)


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
def test_channel_biased_k(pv, device):
    _skip_fp8_if_unsupported(pv)
    check(*make_qkv(device, lq=130, kind="biased_k", dtype=torch.bfloat16), pv=pv, kind="biased_k")


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
def test_outliers_stay_finite(pv, device):
    _skip_fp8_if_unsupported(pv)
    check(*make_qkv(device, lq=130, kind="outliers", dtype=torch.bfloat16), pv=pv, kind="outliers")


@pytest.mark.parametrize("pv", ["fp16", "fp8"])
@pytest.mark.parametrize("smooth_k", [True, False])
def test_lse_is_natural_log_and_corrected_for_smoothing(pv, smooth_k, device):
    _skip_fp8_if_unsupported(pv)
    # Unsmoothed INT8 K is only accurate without a channel bias (that is what smoothing is for).
    q, k, v = make_qkv(device, hq=4, hkv=2, lq=65, lk=130, kind="biased_k" if smooth_k else "randn")
    out, lse = FUNCTIONS[pv](q, k, v, return_lse=True, smooth_k=smooth_k)
    _, ref_lse = attention_ref(q, k, v)
    assert lse.shape == (1, 4, 65) and lse.dtype == torch.float32
    err = (lse.double() - ref_lse).abs().max().item()
    assert err <= LSE_MAX_ABS_ERROR, f"lse error {err} > {LSE_MAX_ABS_ERROR}"
    if smooth_k:
        # Without the q·k̄ correction the LSE would be far off: the test can fail.
        km = to_hnd(k, "HND").float().mean(dim=2, keepdim=True).repeat_interleave(2, dim=1)
        shift = (q.float() @ km.transpose(-1, -2)).squeeze(-1) * 64**-0.5
        assert shift.abs().max().item() > 10 * LSE_MAX_ABS_ERROR


def test_smooth_v_fp8(device):
    _skip_fp8_if_unsupported("fp8")
    q, k, v = make_qkv(device, lq=65, hq=4, layout="NHD")
    v = v + 3.0  # channel bias in V: what smoothing V is for
    check(q, k, v, pv="fp8", layout="NHD", smooth_v=True)
    # The flag must act: the output is nearer the smoothed scheme than the unsmoothed one.
    out = sa.sageattn_qk_int8_pv_fp8_triton(q, k, v, tensor_layout="NHD", smooth_v=True)
    smoothed, plain = (emulate(q, k, v, pv="fp8", layout="NHD", is_causal=False, smooth_v=s) for s in (True, False))
    assert relative_max_error(out.float(), smoothed) < relative_max_error(out.float(), plain)


def test_sageattn_dispatches_and_matches_a_variant(device, capfd):
    q, k, v = make_qkv(device, lq=65)
    capfd.readouterr()
    out = sa.sageattn(q, k, v)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == "", "sageattn must not print"
    ref, _ = attention_ref(q, k, v)
    if device == "cpu":
        assert torch.equal(out, sa.sageattn_qk_int8_pv_fp16_triton(q, k, v))
    assert_close_to_reference(out, ref, scheme=SCHEMES["fp8"], context="sageattn")


@pytest.mark.gpu
def test_cuda_quantization_backend(device):
    from sageattention import _support

    if not set(_support.CUDA_HELPER_OPS) <= _support.built_cuda_ops():
        pytest.skip(f"compiled quantizer not built: {_support.missing_cuda_reason()}")
    q, k, v = make_qkv(device, lq=130, d=96, layout="NHD")
    out = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, tensor_layout="NHD", quantization_backend="cuda")
    check_out = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, tensor_layout="NHD")
    ref, _ = attention_ref(q, k, v, tensor_layout="NHD")
    assert_close_to_reference(out, ref, emulated=check_out, scheme=SCHEMES["fp16"], context="cuda quantizer")


def test_sdpa_keywords_accepted(device):
    q, k, v = make_qkv(device, lq=17)
    base = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, sm_scale=0.2)
    same = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, scale=0.2, attn_mask=None, dropout_p=0.0, enable_gqa=True)
    assert torch.equal(base, same)


def test_empty_query(device):
    q, k, v = make_qkv(device, lq=0, lk=5)
    out, lse = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, return_lse=True)
    assert out.shape == q.shape and lse.shape == (1, 2, 0)


@pytest.mark.parametrize("is_causal", [False, True])
def test_varlen_matches_per_sequence_attention(is_causal, device):
    lens_q, lens_k = [1, 70, 33], [5, 70, 40]
    cu_q = torch.tensor([0, 1, 71, 104], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 5, 75, 115], dtype=torch.int32, device=device)
    q = torch.randn(sum(lens_q), 4, 72, device=device).to(torch.bfloat16)
    k = (torch.randn(sum(lens_k), 2, 72, device=device) + 2.0).to(torch.bfloat16)
    v = torch.randn(sum(lens_k), 2, 72, device=device).to(torch.bfloat16)
    out = sa.sageattn_varlen(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), is_causal=is_causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    refs = []
    for i in range(3):
        qs = q[cu_q[i] : cu_q[i + 1]].transpose(0, 1)[None]
        ks = k[cu_k[i] : cu_k[i + 1]].transpose(0, 1)[None]
        vs = v[cu_k[i] : cu_k[i + 1]].transpose(0, 1)[None]
        refs.append(attention_ref(qs, ks, vs, is_causal=is_causal)[0][0].transpose(0, 1))
    assert_close_to_reference(out, torch.cat(refs), scheme=SCHEMES["fp16"], context="varlen")
