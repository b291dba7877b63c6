"""Error metrics and the tolerance helper."""

from __future__ import annotations

import math

import pytest
import torch

from sageattention.testing import metrics as M


def test_metric_values():
    ref = torch.tensor([1.0, -2.0, 3.0, 0.0])
    out = torch.tensor([1.0, -2.0, 2.0, 1.0])
    assert M.cosine_similarity(ref, ref) == pytest.approx(1.0)
    assert M.cosine_similarity(-ref, ref) == pytest.approx(-1.0)
    assert M.relative_l1(out, ref) == pytest.approx(2.0 / 6.0)
    assert M.rmse(out, ref) == pytest.approx(math.sqrt(2.0 / 4.0))
    assert M.cosine_similarity(torch.zeros(3), torch.zeros(3)) == 1.0


def test_table_covers_every_input_kind():
    for scheme, tol in M.TOLERANCES.items():
        assert set(tol.min_cosine) == set(tol.max_rel_l1) == {"randn", "biased_k", "outliers"}, scheme
    for scheme in M.TARGETS:
        assert scheme in M.TOLERANCES


def test_assert_close_passes_and_reports():
    ref = torch.randn(1000, dtype=torch.float64)
    out = ref + 1e-4 * torch.randn(1000, dtype=torch.float64)
    got = M.assert_close_to_reference(out, ref, emulated=out, scheme=("int8", "fp16", "fp32"))
    assert got["cosine"] > 0.9999 and "emulated_rel_l1" in got


@pytest.mark.parametrize(
    "make_out, emulated_noise, fragment",
    [
        (lambda r: r.clone().fill_(float("nan")), None, "NaN/Inf"),
        (lambda r: r + 0.1 * torch.randn_like(r), None, "cosine"),
        (lambda r: r + 0.005 * torch.randn_like(r), 1e-5, "kernel worse than its own quantization"),
    ],
)
def test_assert_close_fails_readably(make_out, emulated_noise, fragment):
    ref = torch.randn(1000, dtype=torch.float64)
    out = make_out(ref)
    emulated = None if emulated_noise is None else ref + emulated_noise * torch.randn_like(ref)
    with pytest.raises(AssertionError, match=fragment):
        M.assert_close_to_reference(out, ref, emulated=emulated, scheme=("int8", "fp16", "fp32"), context="case")


def test_unknown_scheme_or_inputs():
    x = torch.zeros(2)
    with pytest.raises(KeyError):
        M.assert_close_to_reference(x, x, scheme=("int4", "fp8", "fp32"))
    with pytest.raises(KeyError):
        M.assert_close_to_reference(x, x, scheme=("int8", "fp8", "fp32"), inputs="weird")
