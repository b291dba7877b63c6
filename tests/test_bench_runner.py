"""Benchmark runner plumbing (benchmarks/common.py, bench_attention.py, plot.py) on CPU.

Runs the real runner in ``--interpret`` mode (TRITON_INTERPRET=1, tiny shapes): outputs are
verified against float64 attention before timing, a wrong output is rejected and never recorded,
the CSV has the agreed columns, the chart renders. Timings here mean nothing and are not checked.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from benchmarks import bench_attention, common, plot

REQUIRED_COLUMNS = "impl,gpu,torch,cuda,dtype,batch,heads,seqlen,head_dim,causal,ms,tops,commit".split(",")
SMOKE_IMPLS = ["sdpa-math", "attn_qk_int8_pv_fp16", "attn_qk_int8_pv_fp8", "quant_per_block_int8", "quant_per_channel_fp8"]
PUBLIC_TRITON_IMPLS = ["sageattn_qk_int8_pv_fp16_triton", "sageattn_qk_int8_pv_fp8_triton"]

interpret_only = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter smoke mode is for machines without a GPU")


def _csv_rows(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def smoke_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "smoke.csv"
    rc = bench_attention.main(["--interpret", "--csv", str(path), "--impl", ",".join(SMOKE_IMPLS), "--plot"])
    return rc, path


# --- pure helpers -------------------------------------------------------------------------------


def test_tops_counts_4_b_h_l2_d_and_halves_causal():
    shape = common.Shape(batch=4, heads=32, seqlen=16384, head_dim=128, causal=False)
    flops = 4 * 4 * 32 * 16384**2 * 128
    assert common.tops(shape, 40.0) == pytest.approx(flops / 0.040 / 1e12, rel=1e-12)
    causal = common.Shape(batch=4, heads=32, seqlen=16384, head_dim=128, causal=True)
    assert common.tops(causal, 40.0) == pytest.approx(common.tops(shape, 40.0) / 2, rel=1e-12)


def test_sample_rows_cover_both_ends_and_are_bounded():
    assert common.sample_rows(5) == [0, 1, 2, 3, 4]
    rows = common.sample_rows(16384)
    assert rows[0] == 0 and rows[-1] == 16383 and len(rows) == common.VERIFY_ROWS
    assert rows == sorted(set(rows))


def test_seqlen_parsing():
    assert bench_attention.parse_lengths("1K,2k, 4096") == [1024, 2048, 4096]
    for bad in ("", "x", "0", "1.5K"):
        with pytest.raises(Exception, match="seqlen"):
            bench_attention.parse_lengths(bad)


@pytest.mark.parametrize(
    "argv, message",
    [(["--impl", "flash9"], "unknown --impl"), (["--mode", "fast"], "unknown --mode")],
)
def test_unknown_impl_and_mode_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench_attention.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_without_cuda_the_runner_refuses_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as info:
        bench_attention.main([])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "needs a CUDA GPU" in err and "--interpret" in err


def test_csv_with_different_columns_is_not_appended_to(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("impl,ms\nx,1\n")
    with pytest.raises(ValueError, match="expected"):
        common.append_rows(path, [])


# --- the interpreter smoke run --------------------------------------------------------------------


@interpret_only
def test_smoke_run_verifies_times_and_writes_the_agreed_columns(smoke_csv):
    rc, path = smoke_csv
    assert rc == 0
    header, rows = _csv_rows(path)
    assert header == common.CSV_COLUMNS and set(REQUIRED_COLUMNS) <= set(header)
    got = sorted((r["impl"], r["causal"]) for r in rows)
    assert got == sorted((impl, c) for impl in SMOKE_IMPLS for c in ("0", "1"))
    commit = common.git_commit()
    registry = bench_attention.default_registry()
    for r in rows:
        assert all(r[c] != "" for c in REQUIRED_COLUMNS if c != "tops"), r
        assert r["commit"] == commit and r["dtype"] == "bfloat16"
        assert float(r["ms"]) > 0 and float(r["ms_p20"]) <= float(r["ms"]) <= float(r["ms_p80"])
        shape = common.Shape(int(r["batch"]), int(r["heads"]), int(r["seqlen"]), int(r["head_dim"]), r["causal"] == "1")
        if r["mode"] == "quant":
            assert r["tops"] == "" and r["cos_sim"] == ""
        else:
            assert math.isclose(float(r["tops"]), common.tops(shape, float(r["ms"])), rel_tol=1e-3)
            cos_min, l1_max = common.tolerance(registry[r["impl"]].scheme)
            assert float(r["cos_sim"]) >= cos_min and float(r["rel_l1"]) <= l1_max


@interpret_only
def test_public_triton_functions_are_verified_and_timed(tmp_path):
    path = tmp_path / "api.csv"
    rc = bench_attention.main(["--interpret", "--csv", str(path), "--impl", ",".join(PUBLIC_TRITON_IMPLS), "--causal", "1"])
    assert rc == 0
    _, rows = _csv_rows(path)
    assert sorted(r["impl"] for r in rows) == sorted(PUBLIC_TRITON_IMPLS)


def _wrong_everywhere(out):
    return out.roll(1, dims=-1)  # channels shuffled: every row is wrong


def _wrong_last_row(out):
    out = out.clone()
    out[:, :, -1] = -out[:, :, -1]  # a tail-block bug: only the last query row is wrong
    return out


def _nan_in_unsampled_row(out):
    out = out.clone()
    out[0, 0, 1] = float("nan")  # row 1 of 130 is not sampled; the finiteness check still sees it
    return out


@interpret_only
@pytest.mark.parametrize("corrupt", [_wrong_everywhere, _wrong_last_row, _nan_in_unsampled_row])
def test_a_wrong_output_is_rejected_and_not_recorded(tmp_path, capsys, corrupt):
    registry = bench_attention.default_registry()
    math_impl = registry["sdpa-math"]

    def prepare(q, k, v, shape):
        fn = math_impl.prepare(q, k, v, shape)
        return lambda: corrupt(fn())

    registry["broken"] = common.Impl("broken", "end2end", prepare, scheme=common.BASELINE, check=math_impl.check, default=False)
    path = tmp_path / "broken.csv"
    rc = bench_attention.main(["--interpret", "--csv", str(path), "--impl", "sdpa-math,broken", "--causal", "0"],
                              registry=registry)
    assert rc == 1
    _, rows = _csv_rows(path)
    assert [r["impl"] for r in rows] == ["sdpa-math"]
    assert "broken" in capsys.readouterr().out.split("FAILED", 1)[1]


@interpret_only
def test_plot_renders_a_png_from_the_smoke_csv(smoke_csv, tmp_path):
    _, path = smoke_csv
    for mode in ("end2end", "kernel"):  # written by the run's --plot next to the CSV
        png = path.with_name(f"{path.stem}_{mode}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for mode in ("end2end", "kernel"):
        out = tmp_path / f"chart_{mode}.png"
        assert plot.main([str(path), "--mode", mode, "--out", str(out)]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_needs_a_gpu_choice_when_the_csv_mixes_gpus(tmp_path):
    path = tmp_path / "mixed.csv"
    base = {c: "" for c in common.CSV_COLUMNS}
    rows = []
    for gpu in ("GPU A", "GPU B"):
        rows.append({**base, "impl": "x", "mode": "end2end", "gpu": gpu, "batch": 1, "heads": 1, "seqlen": 1024,
                     "head_dim": 64, "causal": 0, "ms": 1.0, "tops": 10.0, "timestamp": "t", "dtype": "bfloat16"})
    common.append_rows(path, rows)
    assert plot.main([str(path), "--out", str(tmp_path / "a.png")]) == 2
    assert plot.main([str(path), "--gpu", "GPU B", "--out", str(tmp_path / "b.png")]) == 0
