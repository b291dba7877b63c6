"""SageAttention3 reference (sageattn3.reference): exact plumbing, accuracy floors, two-level P gain."""

from __future__ import annotations


import pytest
import torch

from sageattn3.accuracy import ACCURACY_FLOORS, EXACT_FLOORS, TWO_LEVEL_MIN_GAIN, make_inputs
from sageattn3.reference import sageattn3_reference

from sageattention.testing.metrics import cosine_similarity, relative_l1
from sageattention.testing.reference import attention_ref


def _assert_exact(out, ref):
    cos_min, l1_max = EXACT_FLOORS
    cos, l1 = cosine_similarity(out, ref), relative_l1(out, ref)
    assert cos >= cos_min and l1 <= l1_max, (cos, l1)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("per_block_mean", [True, False])
@pytest.mark.parametrize(
    "q_shape, kv_shape",
    [
        ((1, 2, 300, 64), (1, 2, 300, 64)),      # L not a multiple of 16 or 128
        ((2, 8, 130, 48), (2, 1, 200, 48)),      # GQA 8:1, L_q < L_k, D not a multiple of 16
        ((1, 4, 257, 128), (1, 2, 129, 128)),    # L_q > L_k
        ((1, 1, 1, 32), (1, 1, 1, 32)),          # a single token
    ],
)
def test_unquantized_reference_is_exact_attention(q_shape, kv_shape, is_causal, per_block_mean):
    """Tiling, causal mask, GQA, Q/K smoothing, ΔS and the LSE correction, with quantizers off."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(*q_shape, generator=gen) + 2.0  # a large mean makes the Q smoothing matter
    k = torch.randn(*kv_shape, generator=gen) * 2 + torch.randn(kv_shape[-1], generator=gen) * 4
    v = torch.randn(*kv_shape, generator=gen)
    out, lse = sageattn3_reference(
        q, k, v, is_causal=is_causal, per_block_mean=per_block_mean,
        p_quant="none", quantize_qk=False, quantize_v=False,
    )
    ref_out, ref_lse = attention_ref(q, k, v, is_causal=is_causal)
    assert out.dtype == lse.dtype == torch.float32
    assert out.shape == q.shape and lse.shape == q.shape[:3]
    _assert_exact(out, ref_out)
    _assert_exact(lse, ref_lse)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("kind, p_quant", sorted(ACCURACY_FLOORS))
def test_accuracy_vs_float64_meets_the_floor(kind, p_quant, is_causal):
    q, k, v = make_inputs(kind)
    ref, _ = attention_ref(q, k, v, is_causal=is_causal)
    out, _ = sageattn3_reference(q, k, v, is_causal=is_causal, p_quant=p_quant)
    cos_min, l1_max = ACCURACY_FLOORS[(kind, p_quant)]
    cos, l1 = cosine_similarity(out, ref), relative_l1(out, ref)
    assert cos >= cos_min, f"{kind}/{p_quant}: cosine {cos:.5f} < {cos_min}"
    assert l1 <= l1_max, f"{kind}/{p_quant}: rel-L1 {l1:.4f} > {l1_max}"


@pytest.mark.parametrize("is_causal", [False, True])
def test_two_level_p_quantization_beats_direct_by_a_wide_margin(is_causal):
    """Paper §3.2: P-only error (vs unquantized P̃, same Q/K/V quantization) on sink-dominated rows."""
    q, k, v = make_inputs("sink")
    base, _ = sageattn3_reference(q, k, v, is_causal=is_causal, p_quant="none")
    direct, _ = sageattn3_reference(q, k, v, is_causal=is_causal, p_quant="direct")
    two_level, _ = sageattn3_reference(q, k, v, is_causal=is_causal, p_quant="two_level")
    err_direct, err_two = relative_l1(direct, base), relative_l1(two_level, base)
    assert err_direct >= TWO_LEVEL_MIN_GAIN * err_two, (err_direct, err_two)


def test_quantization_actually_happens():
    """The quantized reference must differ from exact attention (guards against a no-op quantizer)."""
    q, k, v = make_inputs("randn", shape=(1, 2, 256, 64))
    exact, _ = sageattn3_reference(q, k, v, p_quant="none", quantize_qk=False, quantize_v=False)
    for kw in ({"quantize_qk": False, "quantize_v": False}, {"p_quant": "none", "quantize_v": False},
               {"p_quant": "none", "quantize_qk": False}):
        out, _ = sageattn3_reference(q, k, v, **kw)
        assert relative_l1(out, exact) > EXACT_FLOORS[1] * 10, kw


def test_per_block_mean_helps_when_q_drifts_along_the_sequence():
    """Q whose mean changes every 128 tokens: block means remove more of it than one global mean."""
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 2, 512, 64, generator=gen) for _ in range(3))
    q += torch.randn(1, 2, 4, 64, generator=gen).repeat_interleave(128, dim=2) * 4
    ref, _ = attention_ref(q, k, v)
    per_block, _ = sageattn3_reference(q, k, v, per_block_mean=True)
    global_mean, _ = sageattn3_reference(q, k, v, per_block_mean=False)
    assert relative_l1(per_block, ref) < relative_l1(global_mean, ref)


def test_bad_p_quant_mode_is_rejected():
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="p_quant"):
        sageattn3_reference(q, q, q, p_quant="fp8")
