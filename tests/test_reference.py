"""The PyTorch references: exact attention and the quantization emulations."""

from __future__ import annotations

import pytest
import torch

from sageattention.testing import reference as R


def test_attention_ref_matches_sdpa_with_gqa_and_causal():
    q = torch.randn(2, 4, 17, 32, dtype=torch.float64)
    k = torch.randn(2, 2, 23, 32, dtype=torch.float64)
    v = torch.randn(2, 2, 23, 32, dtype=torch.float64)
    for causal in (False, True):
        out, lse = R.attention_ref(q, k, v, is_causal=causal)
        kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        want = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, is_causal=causal)
        torch.testing.assert_close(out, want)
        s = q @ kk.transpose(-1, -2) / 32**0.5
        if causal:
            s = s.masked_fill(torch.ones(17, 23, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(lse, torch.logsumexp(s, dim=-1))
    out_nhd, _ = R.attention_ref(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), tensor_layout="NHD")
    torch.testing.assert_close(out_nhd.transpose(1, 2), R.attention_ref(q, k, v)[0])


def test_slab_groups_per_warp_equals_groups_of_slab_rows():
    x = torch.randn(1, 2, 128, 16)
    a, sa = R.quant_int8_slab_groups(x, block=128, slab=32, groups_per_slab=1)
    b, sb = R.quant_int8_groups(x, 32)
    assert torch.equal(a, b) and torch.equal(sa, sb)


@pytest.mark.parametrize("groups, rows_of_group_1", [(8, [1, 9, 17, 25]), (4, [2, 3, 10, 11, 18, 19, 26, 27])])
def test_per_thread_group_membership(groups, rows_of_group_1):
    x = torch.ones(1, 1, 32, 4)
    x[0, 0, rows_of_group_1] = 50.0
    _, scale = R.quant_int8_slab_groups(x, block=32, slab=32, groups_per_slab=groups)
    want = torch.full((groups,), 1 / 127)
    want[1] = 50 / 127
    torch.testing.assert_close(scale[0, 0], want)


# (emulation, Q pre-scale folded?, Q row -> scale index, K row -> scale index)
GRANULARITIES = [
    (R.quant_per_block_int8_ref, True, lambda r: r // 128, lambda r: r // 64),
    (R.quant_per_warp_int8_ref, True, lambda r: r // 32, lambda r: r // 64),
    (R.quant_per_thread_int8_ref, False, lambda r: (r // 32) * 8 + r % 8, lambda r: (r // 64) * 4 + (r % 8) // 2),
]


@pytest.mark.parametrize("fn, folded, q_index, k_index", GRANULARITIES, ids=lambda x: getattr(x, "__name__", ""))
def test_dequantization_error_is_half_a_step(fn, folded, q_index, k_index):
    q = torch.randn(1, 2, 100, 64)
    k = torch.randn(1, 2, 100, 64) + 5
    q_i8, q_s, k_i8, k_s, k_mean = fn(q, k)
    rows = torch.arange(100)
    pre = 64**-0.5 * R.LOG2E if folded else 1.0
    for x, x_i8, s, index in ((q * pre, q_i8, q_s, q_index), (k - k_mean, k_i8, k_s, k_index)):
        step = s[:, :, index(rows)][..., None]  # the scale of each row's own group
        err = (x_i8.float() * step - x).abs()
        assert (err <= step / 2 * (1 + 1e-5) + 1e-7).all(), f"{fn.__name__}: error above half a step"
        # Every group's absmax maps to 127 (not just the tensor's): max |int8| per group.
        groups = index(rows)
        row_max = x_i8.abs().amax(dim=-1).int()
        group_max = torch.zeros(1, 2, int(groups.max()) + 1, dtype=torch.int32)
        group_max.scatter_reduce_(2, groups.expand_as(row_max), row_max, "amax")
        assert (group_max == 127).all(), f"{fn.__name__}: a group's absmax does not map to 127"
    assert k_mean.shape == (1, 2, 1, 64)


def test_per_block_ref_keeps_its_contract():
    q = torch.tensor([[[[1.0, -2.0], [0.5, 0.25]]]])
    k = torch.tensor([[[[3.0, 1.0], [1.0, 3.0]]]])
    q_i8, q_s, k_i8, k_s, k_mean = R.quant_per_block_int8_ref(q, k, sm_scale=1.0)
    torch.testing.assert_close(q_s, torch.tensor([[[2.0 * R.LOG2E / 127]]]))
    assert q_i8.tolist() == [[[[64, -127], [32, 16]]]]  # 63.5 rounds away from zero
    torch.testing.assert_close(k_mean, torch.tensor([[[[2.0, 2.0]]]]))
    assert k_i8.tolist() == [[[[127, -127], [-127, 127]]]]


def test_smooth_q_identity():
    q = torch.randn(1, 4, 70, 16, dtype=torch.float64).float() + 2
    k = torch.randn(1, 2, 50, 16)
    ks = k - k.mean(dim=2, keepdim=True)
    q_s, q_mean, delta_s = R.smooth_q_per_block_ref(q, ks, blkq=32)
    assert q_mean.shape == (1, 4, 3, 16) and delta_s.shape == (1, 4, 3, 50)
    kk = ks.repeat_interleave(2, dim=1)
    index = torch.arange(70) // 32
    rebuilt = q_s @ kk.transpose(-1, -2) + delta_s[:, :, index]
    torch.testing.assert_close(rebuilt, q @ kk.transpose(-1, -2), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(q_s[:, :, :32].mean(dim=2), torch.zeros(1, 4, 16), rtol=0, atol=1e-5)


@pytest.mark.parametrize("smooth_v", [False, True])
def test_v_fp8_ref(smooth_v):
    v = torch.randn(1, 2, 40, 8) * 3 + 1
    v8, scale, mean = R.quant_v_per_channel_fp8_ref(v, smooth_v=smooth_v, scale_max=448.0)
    centred = v - mean if smooth_v else v
    assert (mean is not None) == smooth_v
    assert v8.float().abs().amax(dim=2).eq(448.0).all()  # each channel's absmax maps to 448
    deq = v8.float() * scale[:, :, None, :]
    # e4m3 has 3 mantissa bits: relative error <= 2^-4 for normals.
    big = centred.abs() > scale[:, :, None, :] * 2**-6
    assert ((deq - centred).abs() <= centred.abs() * 2**-4 + 1e-6)[big].all()


def test_rounding_helpers():
    x = torch.tensor([1.0 + 2**-12, 70000.0, -3.0])
    assert R.round_to_fp16(x).tolist() == [1.0, float("inf"), -3.0]
    assert R.round_to(torch.tensor([1.0 + 2**-9]), torch.bfloat16).item() == 1.0
