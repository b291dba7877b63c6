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


def test_emulation_error_leaves_out_only_a_few_fp8_rows():
    from sageattention.testing.emulation import (
        E4M3_STEP,
        EMULATION_TOLERANCE,
        FP8_TIE_FLIP_ROWS,
        emulation_error,
    )

    emu = torch.randn(2, 3, 200, 64, dtype=torch.float64)  # 1200 rows: 12 may be left out for FP8
    scale = emu.abs().max().item()
    tol = EMULATION_TOLERANCE["fp8"]["out"]
    flips = emu.clone()
    flips.view(-1, 64)[:12] += 3 * tol * scale  # 12 rows off by a rounding-tie flip's size
    assert int(FP8_TIE_FLIP_ROWS * 1200) == 12
    err, failure = emulation_error(flips.half(), emu, "fp8")
    assert failure is None and err < tol
    # One row more, or the same rows under a mode without e4m3 P: fails.
    flips.view(-1, 64)[12] += 3 * tol * scale
    assert emulation_error(flips.half(), emu, "fp8")[1] is not None
    assert "max rel err" in emulation_error(flips.half(), emu, "fp32")[1]
    # A single row beyond one e4m3 step fails even for FP8.
    gross = emu.clone()
    gross.view(-1, 64)[0] += 2 * E4M3_STEP * scale
    assert "one e4m3 step" in emulation_error(gross.half(), emu, "fp8")[1]
    # A small systematic error (every row) fails; the emulation itself passes.
    assert emulation_error((emu * (1 + 2 * tol)).half(), emu, "fp8")[1] is not None
    assert emulation_error(emu.half(), emu, "fp8") == (pytest.approx(0.0, abs=1e-3), None)
