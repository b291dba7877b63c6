"""The sageattn3 CUDA kernels against the PyTorch NVFP4 reference (sageattn3.reference).

Marker ``gpu``. Runs on any GPU for which the installed ``sageattn3._C`` holds code:

* on an H100, a dev/test build with the software FP4 MMA (the same source as the sm_100a code):
  ``SAGEATTN3_EMULATED_MMA_BUILD=1 python -m scripts.build --cell <cell> --package sageattn3
  --archs 9.0a``, then install that wheel (README, "sageattn3");
* on a Blackwell GPU, a normal build (nothing here has run on one yet).

Skips cleanly without a GPU, or when ``sageattn3._C`` is missing or has no code for this GPU;
``SAGEATTN3_REQUIRE_KERNEL_TEST=1`` turns those skips into failures (for the run that must execute).

What is checked: the quantizer is bit-exact against sageattn3.nvfp4; the attention output and LSE
agree with the reference (same tiling, smoothing, ΔS, two-level P) up to float32 summation-order
noise, and are no further from float64 attention than the reference is (STYLE.md H4); shapes that
are not multiples of the tiles, seqlen 1, GQA/MQA, causal, global Q mean, head dims padded to
64/128, both layouts through the public API, and inputs left unmodified.
"""

from __future__ import annotations

import os

import pytest
import torch

from sageattn3 import _ops, api
from sageattn3.nvfp4 import quantize_nvfp4, round_to_e4m3
from sageattn3.reference import sageattn3_reference

from sageattention.testing.metrics import cosine_similarity, relative_l1
from sageattention.testing.reference import attention_ref

pytestmark = pytest.mark.gpu

REQUIRE = os.environ.get("SAGEATTN3_REQUIRE_KERNEL_TEST") == "1"


def _skip(reason: str):
    if REQUIRE:
        pytest.fail(f"SAGEATTN3_REQUIRE_KERNEL_TEST=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def _kernel_on_this_gpu():
    if not torch.cuda.is_available():
        _skip("needs a CUDA GPU")
    if not _ops.kernel_available():
        _skip(_ops.missing_build_reason())
    major, minor = torch.cuda.get_device_capability()
    archs = {a.rstrip("af") for a in _ops.compiled_archs()}
    if f"{major}.{minor}" not in archs:
        _skip(f"sageattn3._C was built for {_ops.compiled_archs()}, this GPU is sm{major}{minor} "
              "(build with SAGEATTN3_EMULATED_MMA_BUILD=1 --archs for it)")


def _decode(codes: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 packed codes / E4M3 scale bits -> float32 E2M1 values and scales."""
    grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6], device=codes.device)
    nib = torch.stack([codes & 0xF, codes >> 4], dim=-1).reshape(*codes.shape[:-1], -1).long()
    values = grid[nib & 7] * torch.where(nib >= 8, -1.0, 1.0)
    return values, scales.view(torch.float8_e4m3fn).to(torch.float32)


def _qkv(b=1, hq=2, hkv=2, lq=128, lk=128, d=128, dtype=torch.float16, seed=0, sink=False):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(b, hq, lq, d, device="cuda", generator=gen)
    k = torch.randn(b, hkv, lk, d, device="cuda", generator=gen)
    v = torch.randn(b, hkv, lk, d, device="cuda", generator=gen)
    if sink:  # one key that every query attends to strongly, plus a K offset (what smoothing removes)
        k[:, :, 0] += 4.0
        k += 2.0
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _fits(d: int) -> bool:
    return any(dim >= d for dim in _ops.head_dims())


# --- quantizer -------------------------------------------------------------------------------


def test_quantizer_is_bit_exact_against_the_reference():
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(64, 256, device="cuda", generator=gen) * torch.logspace(-4, 3, 256, device="cuda")
    # ties of the E2M1 grid relative to a block max of 6, zeros, saturation, tiny blocks
    x[0, :16] = torch.tensor([6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -2.5, -5, 0, 0, 0, 0, 0.1])
    x[1, :16] = 0
    x[2, :16] = 1e5
    x[3, :16] = 1e-6
    codes, scales = _ops.quant_nvfp4(x)
    values, got_scales = _decode(codes, scales)
    ref_values, ref_scales = quantize_nvfp4(x)
    torch.testing.assert_close(got_scales, ref_scales, rtol=0, atol=0)
    torch.testing.assert_close(values, ref_values, rtol=0, atol=0)
    assert torch.equal(got_scales, round_to_e4m3(got_scales))


# --- attention -------------------------------------------------------------------------------

CASES = [
    # (b, hq, hkv, lq, lk, d, causal, per_block_mean)
    (1, 2, 2, 128, 128, 128, False, True),
    (2, 4, 2, 300, 300, 128, True, True),     # GQA, lengths not multiples of the tiles
    (1, 4, 1, 77, 513, 128, False, True),     # MQA, lk spans 5 tiles with a ragged end
    (1, 2, 2, 1, 1, 128, False, True),        # seqlen 1
    (1, 2, 2, 1, 200, 128, True, True),       # one query row, causal: sees key 0 only
    (1, 2, 2, 257, 130, 128, True, False),    # global Q mean, causal with lq > lk
    (1, 2, 2, 200, 200, 64, False, True),
    (1, 2, 2, 200, 200, 80, True, True),      # padded to 128 (or unsupported in a trimmed build)
    (1, 2, 2, 150, 150, 40, False, True),     # padded to 64 (or 128)
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}h{}kv{}q{}k{}d{}{}{}".format(
    *c[:6], "-causal" if c[6] else "", "" if c[7] else "-globalmean"))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_matches_the_nvfp4_reference(case, dtype):
    b, hq, hkv, lq, lk, d, causal, per_block = case
    if not _fits(d):
        pytest.skip(f"head_dim {d} above this build's head dims {_ops.head_dims()}")
    q, k, v = _qkv(b, hq, hkv, lq, lk, d, dtype=dtype, seed=lq + lk + d)
    before = [t.clone() for t in (q, k, v)]
    out, lse = _ops.attn_forward(q, k, v, is_causal=causal, per_block_mean=per_block)
    for t, saved in zip((q, k, v), before):
        assert torch.equal(t, saved), "an input was modified"
    ref_out, ref_lse = sageattn3_reference(q, k, v, is_causal=causal, per_block_mean=per_block)
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    # Same algorithm: only float32 summation order and exp() rounding differ, which flips the FP4
    # rounding of a few P elements; the LSE does not see P's quantization at all.
    torch.testing.assert_close(lse, ref_lse, rtol=1e-4, atol=1e-4)
    assert cosine_similarity(out, ref_out) > 0.9995, cosine_similarity(out, ref_out)
    assert relative_l1(out, ref_out) < 0.02, relative_l1(out, ref_out)
    exact = attention_ref(q, k, v, is_causal=causal)[0].float()
    assert relative_l1(out, exact) <= 1.05 * relative_l1(ref_out, exact) + 1e-3


def test_attention_sink_input_two_level_p():
    """Peaked softmax rows: the case two-level P quantization exists for."""
    q, k, v = _qkv(1, 2, 2, 256, 384, 128, dtype=torch.bfloat16, seed=7, sink=True)
    out, lse = _ops.attn_forward(q, k, v)
    ref_out, ref_lse = sageattn3_reference(q, k, v)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-4, atol=1e-4)
    assert cosine_similarity(out, ref_out) > 0.9995


def test_sm_scale_is_used():
    q, k, v = _qkv(lq=64, lk=64)
    out, lse = _ops.attn_forward(q, k, v, sm_scale=0.05)
    ref_out, ref_lse = sageattn3_reference(q, k, v, sm_scale=0.05)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-4, atol=1e-4)
    assert cosine_similarity(out, ref_out) > 0.9995


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_public_api_path_with_dispatch_opened_to_this_gpu(monkeypatch, layout):
    """sageattn3_blackwell's kernel branch (layouts, dtype, return_lse), forced onto this GPU.

    The real dispatcher sends only Blackwell GPUs there; the patch admits this one so that the
    layout handling around the kernel runs too.
    """
    major, _ = torch.cuda.get_device_capability()
    monkeypatch.setattr(api, "BLACKWELL_MAJORS", tuple(sorted({major, *api.BLACKWELL_MAJORS})))
    monkeypatch.setattr(api, "_compiled_kernel_available", lambda capability=None: True)
    monkeypatch.delenv(api.ALLOW_REFERENCE_ENV, raising=False)
    q, k, v = _qkv(1, 4, 2, 200, 200, 128, dtype=torch.bfloat16, seed=3)
    if layout == "NHD":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # non-contiguous NHD views
    out, lse = api.sageattn3_blackwell(q, k, v, is_causal=True, tensor_layout=layout, return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    hnd = (lambda t: t) if layout == "HND" else (lambda t: t.transpose(1, 2))
    ref_out, ref_lse = sageattn3_reference(hnd(q), hnd(k), hnd(v), is_causal=True)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-4, atol=1e-4)
    assert cosine_similarity(hnd(out).float(), ref_out) > 0.999


def test_blackwell_dispatch_uses_the_kernel():
    """Only meaningful on a Blackwell GPU with a normal build: the public API runs the kernel."""
    major, minor = torch.cuda.get_device_capability()
    if major not in api.BLACKWELL_MAJORS:
        pytest.skip(f"sm{major}{minor} is not Blackwell: the public API refuses it by design")
    q, k, v = _qkv(1, 2, 2, 256, 256, 128)
    out = api.sageattn3_blackwell(q, k, v)  # no allow_reference: must be the kernel
    ref_out, _ = sageattn3_reference(q, k, v)
    assert cosine_similarity(out.float(), ref_out) > 0.999
