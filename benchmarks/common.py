"""Benchmark runner shared by ``benchmarks/bench_*.py``: verify, then time, then append to a CSV.

For every (implementation, shape) the runner

1. builds inputs (``randn``, the shape's dtype) and runs the implementation once;
2. **verifies that very output** against the float64 reference
   (``sageattention.testing.reference.attention_ref``) on sampled rows — every (first, last)
   batch × (first, last) head, up to ``VERIFY_ROWS`` query rows spread over the sequence, first and
   last included — with cosine similarity and relative L1 from ``sageattention.testing.metrics``
   and the tolerance of the implementation's quantization scheme from the same table. Sampling rows
   keeps the float64 reference cheap at 16K tokens while checking the exact tensor that is timed;
   an implementation that fails is reported and not timed;
3. times it with ``triton.testing.do_bench`` (median, p20, p80; L2 flushed between runs);
4. appends one row per measurement to a long-format CSV (``CSV_COLUMNS``).

Modes: ``end2end`` (the public function as users call it, quantization included), ``kernel``
(the Triton attention kernel on pre-quantized inputs, as upstream's charts report) and ``quant``
(the quantizers alone). TOPS = 4·B·H·L²·D / time, halved for causal (research notes §3.1), for
every mode except ``quant``.

``interpret=True`` is a plumbing smoke mode for machines without a GPU: CPU tensors, Triton
kernels under ``TRITON_INTERPRET=1`` (set by the caller before triton is imported), wall-clock
timing; its numbers mean nothing.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from sageattention.testing.reference import LOG2E, attention_ref, quant_per_block_int8_ref, quant_v_per_channel_fp8_ref

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

CSV_COLUMNS = [
    "impl", "mode", "gpu", "torch", "cuda", "triton", "sageattention", "dtype",
    "batch", "heads", "seqlen", "head_dim", "causal",
    "ms", "ms_p20", "ms_p80", "tops", "cos_sim", "rel_l1",
    "commit", "run_id", "timestamp",
]
MODES = ("end2end", "kernel", "quant")
#: Query rows per (batch, head) checked against float64 attention.
VERIFY_ROWS = 64
# Why these do_bench budgets: a 16K hd128 call takes ~40 ms on an H100, so 200 ms of repetitions
# still gives ≥ 5 samples there and hundreds at 1K, while the default suite (20 shapes × 8
# measurements) stays within ~6 minutes including compilation and verification.
WARMUP_MS = 25
REP_MS = 200
#: Wall-clock repetitions in interpreter mode (numbers are meaningless; kept small).
INTERPRET_REPS = 3


class VerificationError(AssertionError):
    """An implementation's output is not close enough to the float64 reference."""


class ImplUnavailable(Exception):
    """An implementation cannot run here (not built, wrong GPU): skipped with its reason."""


@dataclass(frozen=True)
class Shape:
    """One benchmark problem: self-attention, HND layout, ``q_len == kv_len``."""

    batch: int
    heads: int
    seqlen: int
    head_dim: int
    causal: bool
    dtype: torch.dtype = torch.bfloat16

    @property
    def flops(self) -> float:
        """FP16-attention FLOP count, 4·B·H·L²·D, halved for causal (how TOPS are defined)."""
        full = 4.0 * self.batch * self.heads * self.seqlen ** 2 * self.head_dim
        return full / 2 if self.causal else full


def tops(shape: Shape, ms: float) -> float:
    """Tera-operations per second of ``shape`` done in ``ms`` milliseconds."""
    return shape.flops / (ms * 1e-3) / 1e12


@dataclass
class Impl:
    """A benchmarked implementation.

    ``prepare(q, k, v, shape)`` does the untimed setup (pre-quantization for ``kernel`` mode) and
    returns the function to time; that function returns the attention output ``[B, H, L, D]``
    (``end2end``/``kernel``) or the quantizer outputs (``quant``). ``check(result, q, k, v, shape)``
    verifies a result and returns ``(cos_sim, rel_l1)`` (None for ``quant``), raising
    :class:`VerificationError`. ``scheme`` keys the tolerance table.
    """

    name: str
    mode: str
    prepare: Callable
    scheme: str | None = None
    check: Callable | None = None
    needs_cuda: bool = False
    default: bool = True


# --- environment --------------------------------------------------------------------------------


def git_commit(repo: Path = REPO_ROOT) -> str:
    """``git rev-parse --short HEAD`` plus ``-dirty`` when tracked files changed; "unknown" without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def sageattention_version() -> str:
    """Installed distribution version, else the in-tree pyproject version marked ``+src``."""
    from importlib import metadata

    try:
        return metadata.version("sageattention")
    except metadata.PackageNotFoundError:
        pass
    for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"') + "+src"
    return "unknown"


def environment(interpret: bool) -> dict:
    """The per-run CSV columns: gpu, torch, cuda, triton, sageattention, commit, run_id."""
    import triton

    gpu = "cpu (triton interpreter)" if interpret else torch.cuda.get_device_name()
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "triton": triton.__version__,
        "sageattention": sageattention_version(),
        "commit": git_commit(),
        "run_id": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def default_csv_path(gpu: str) -> Path:
    """``benchmarks/results/attention_<gpu slug>.csv``, one file per GPU model."""
    slug = "".join(c if c.isalnum() else "-" for c in gpu.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return RESULTS_DIR / f"attention_{slug}.csv"


# --- verification -------------------------------------------------------------------------------


def sample_rows(seqlen: int, count: int = VERIFY_ROWS) -> list[int]:
    """Up to ``count`` query rows spread evenly over ``[0, seqlen)``, first and last included."""
    if seqlen <= count:
        return list(range(seqlen))
    return sorted({round(i * (seqlen - 1) / (count - 1)) for i in range(count)})


def reference_rows(q, k, v, shape: Shape, b: int, h: int, rows: list[int]) -> torch.Tensor:
    """float64 attention output of query ``rows`` of (batch ``b``, head ``h``): ``[len(rows), D]``."""
    qb, kb, vb = (t[b : b + 1, h : h + 1] for t in (q, k, v))
    if not shape.causal:
        out, _ = attention_ref(qb[:, :, rows], kb, vb)
        return out[0, 0]
    # Causal row i sees keys 0..i: one non-causal reference call per row on the visible keys.
    return torch.cat([attention_ref(qb[:, :, i : i + 1], kb[:, :, : i + 1], vb[:, :, : i + 1])[0][0, 0] for i in rows])


# float64 reference rows of the current shape's inputs, shared by every impl (``run`` clears it
# per shape, so a reused data pointer can never serve stale rows).
_REFERENCE_CACHE: dict = {}


def attention_errors(out: torch.Tensor, q, k, v, shape: Shape) -> tuple[float, float]:
    """``(cos_sim, rel_l1)`` of ``out`` vs float64 attention on the sampled rows (whole output must be finite)."""
    from sageattention.testing.metrics import cosine_similarity, relative_l1

    if tuple(out.shape) != tuple(q.shape):
        raise VerificationError(f"output shape {tuple(out.shape)} != {tuple(q.shape)}")
    if not torch.isfinite(out).all():
        raise VerificationError("output has NaN/Inf")
    rows = sample_rows(shape.seqlen)
    pairs = [(b, h) for b in sorted({0, shape.batch - 1}) for h in sorted({0, shape.heads - 1})]
    key = (q.data_ptr(), k.data_ptr(), v.data_ptr(), shape)
    if key not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[key] = torch.cat([reference_rows(q, k, v, shape, b, h, rows) for b, h in pairs])
    ref_t = _REFERENCE_CACHE[key]
    got_t = torch.cat([out[b, h, rows].double() for b, h in pairs])
    return float(cosine_similarity(got_t, ref_t)), float(relative_l1(got_t, ref_t))


def check_attention(result: torch.Tensor, q, k, v, shape: Shape, scheme) -> tuple[float, float]:
    """Verify an attention output against the tolerance of ``scheme``; returns ``(cos, rel_l1)``."""
    cos, l1 = attention_errors(result, q, k, v, shape)
    cos_min, l1_max = tolerance(scheme)
    if cos < cos_min or l1 > l1_max:
        raise VerificationError(
            f"cos_sim {cos:.6f} (min {cos_min}) / rel_l1 {l1:.5f} (max {l1_max}) vs float64 for scheme {scheme!r}"
        )
    return cos, l1


#: Tolerance key of the unquantized baselines (SDPA): see :func:`tolerance`.
BASELINE = "baseline"


def tolerance(scheme) -> tuple[float, float]:
    """``(min cosine, max rel-L1)`` on randn inputs, from ``sageattention.testing.metrics.TOLERANCES``.

    ``scheme`` is a table key ``(qk dtype, pv dtype, pv accumulation)``, or :data:`BASELINE` for an
    unquantized implementation, which must meet the tightest floors of the table (it has no
    quantization error to excuse).
    """
    from sageattention.testing.metrics import TOLERANCES

    if scheme == BASELINE:
        return (max(t.min_cosine["randn"] for t in TOLERANCES.values()),
                min(t.max_rel_l1["randn"] for t in TOLERANCES.values()))
    if scheme not in TOLERANCES:
        raise KeyError(f"no tolerance for scheme {scheme}; known: {sorted(TOLERANCES)}")
    entry = TOLERANCES[scheme]
    return entry.min_cosine["randn"], entry.max_rel_l1["randn"]


def _assert_close(name: str, got: torch.Tensor, want: torch.Tensor, **tol) -> None:
    try:
        torch.testing.assert_close(got, want, **tol)
    except AssertionError as exc:
        raise VerificationError(f"{name}: {exc}") from None


def check_qk_quantizers(result, q, k, v, shape: Shape):
    """Verify ``(q_int8, q_scale, k_int8, k_scale)`` against the PyTorch emulation: codes within
    one step (the quantization contract), scales to float32 rounding. Returns None (no TOPS metric)."""
    q_i8, q_scale, k_i8, k_scale = result
    rq, rqs, rk, rks, _ = quant_per_block_int8_ref(q, k, sm_scale=shape.head_dim ** -0.5)
    _assert_close("q_int8", q_i8.int(), rq.int(), rtol=0, atol=1)
    _assert_close("k_int8", k_i8.int(), rk.int(), rtol=0, atol=1)
    _assert_close("q_scale", q_scale, rqs, rtol=1e-6, atol=0)
    _assert_close("k_scale", k_scale, rks, rtol=1e-6, atol=0)
    return None


def check_v_quantizer(result, q, k, v, shape: Shape):
    """Verify ``(v_fp8, v_scale)`` against the PyTorch emulation: values within one e4m3 step."""
    v_fp8, v_scale = result
    want, want_scale, _ = quant_v_per_channel_fp8_ref(v)
    _assert_close("v_scale", v_scale, want_scale, rtol=1e-6, atol=0)
    # One e4m3 step: 2^-3 relative for normal values, 2^-9 absolute for subnormals.
    _assert_close("v_fp8", v_fp8.float(), want.float(), rtol=2.0 ** -3, atol=2.0 ** -9)
    return None


# --- timing -------------------------------------------------------------------------------------


def time_ms(fn: Callable, interpret: bool) -> tuple[float, float, float]:
    """``(median, p20, p80)`` milliseconds of ``fn()``."""
    if interpret:
        samples = []
        for _ in range(INTERPRET_REPS):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
        samples.sort()
        return statistics.median(samples), samples[0], samples[-1]
    import triton.testing

    med, p20, p80 = triton.testing.do_bench(fn, warmup=WARMUP_MS, rep=REP_MS, quantiles=[0.5, 0.2, 0.8])
    return med, p20, p80


# --- CSV ----------------------------------------------------------------------------------------


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path`` (header written for a new file; a different header is an error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if header != CSV_COLUMNS:
            raise ValueError(f"{path} has columns {header}, expected {CSV_COLUMNS}: write to a new --csv file")
        new = False
    else:
        new = True
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict]:
    """All rows of a results CSV as dicts of strings."""
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


# --- the run loop -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one (impl, shape): a CSV row, a skip reason or a failure."""

    impl: str
    shape: Shape
    row: dict | None = None
    skipped: str | None = None
    failed: str | None = None


def make_inputs(shape: Shape, device: str, seed: int = 0):
    """``(q, k, v)`` ``[B, H, L, D]`` randn in the shape's dtype on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    dims = (shape.batch, shape.heads, shape.seqlen, shape.head_dim)
    return tuple(torch.randn(dims, generator=gen, device=device, dtype=torch.float32).to(shape.dtype) for _ in range(3))


def _fmt(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_header() -> None:
    print(f"{'impl':<34} {'mode':<8} {'L':>6} {'D':>4} {'causal':>6} {'ms':>9} {'TOPS':>7} {'cos':>9} {'rel_l1':>8}", flush=True)


def print_outcome(o: Outcome) -> None:
    s = o.shape
    lead = f"{o.impl:<34} {'':<8} {s.seqlen:>6} {s.head_dim:>4} {int(s.causal):>6}"
    if o.row is not None:
        r = o.row
        print(
            f"{o.impl:<34} {r['mode']:<8} {s.seqlen:>6} {s.head_dim:>4} {int(s.causal):>6} "
            f"{_fmt(r['ms'], '9.3f')} {_fmt(r['tops'], '7.1f')} {_fmt(r['cos_sim'], '9.6f')} {_fmt(r['rel_l1'], '8.5f')}",
            flush=True,
        )
    elif o.skipped is not None:
        print(f"{lead} SKIPPED: {o.skipped}", flush=True)
    else:
        print(f"{lead} FAILED: {o.failed}", flush=True)


def _sig(x: float | None, digits: int = 6) -> float | None:
    """``x`` rounded to ``digits`` significant digits (CSV readability; far below timing noise)."""
    return None if x is None else float(f"{x:.{digits}g}")


def _not_built_errors() -> tuple:
    """Exceptions that mean "this implementation is not in this build": skipped, not failed."""
    try:
        from sageattention._ops import CUDAOpsUnavailableError
    except ImportError:
        return (NotImplementedError,)
    return (NotImplementedError, CUDAOpsUnavailableError)


def run_one(impl: Impl, shape: Shape, inputs, env: dict, interpret: bool) -> Outcome:
    """Verify then time ``impl`` on ``shape``; never raises for impl errors (they become outcomes)."""
    q, k, v = inputs
    try:
        fn = impl.prepare(q, k, v, shape)
        result = fn()
        errors = impl.check(result, q, k, v, shape) if impl.check else None
    except ImplUnavailable as exc:
        return Outcome(impl.name, shape, skipped=str(exc))
    except VerificationError as exc:
        return Outcome(impl.name, shape, failed=f"verification: {exc}")
    except _not_built_errors() as exc:  # the API's "not built / not implemented yet" contract
        return Outcome(impl.name, shape, skipped=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one broken impl must not lose the rest of the run
        return Outcome(impl.name, shape, failed=f"{type(exc).__name__}: {exc}")
    del result
    med, p20, p80 = time_ms(fn, interpret)
    cos, l1 = errors if errors else (None, None)
    row = {
        "impl": impl.name, "mode": impl.mode, "gpu": env["gpu"], "torch": env["torch"], "cuda": env["cuda"],
        "triton": env["triton"], "sageattention": env["sageattention"], "dtype": str(shape.dtype).replace("torch.", ""),
        "batch": shape.batch, "heads": shape.heads, "seqlen": shape.seqlen, "head_dim": shape.head_dim,
        "causal": int(shape.causal), "ms": _sig(med), "ms_p20": _sig(p20), "ms_p80": _sig(p80),
        "tops": None if impl.mode == "quant" else _sig(tops(shape, med)),
        "cos_sim": None if cos is None else round(cos, 8), "rel_l1": _sig(l1), "commit": env["commit"], "run_id": env["run_id"],
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return Outcome(impl.name, shape, row=row)


def run(impls: list[Impl], shapes: list[Shape], *, interpret: bool, csv_path: Path | None = None):
    """Run every impl on every shape (inputs made once per shape), print a table, append rows to CSV.

    Returns ``(outcomes, csv path)``; rows are appended after each shape so an interrupted run
    keeps its data.
    """
    device = "cpu" if interpret else "cuda"
    env = environment(interpret)
    path = Path(csv_path) if csv_path else default_csv_path(env["gpu"])
    print(
        f"# {env['gpu']} | torch {env['torch']} | CUDA {env['cuda']} | triton {env['triton']} | "
        f"sageattention {env['sageattention']} | commit {env['commit']} | csv {path}",
        flush=True,
    )
    print_header()
    outcomes = []
    for shape in shapes:
        _REFERENCE_CACHE.clear()
        inputs = make_inputs(shape, device)
        rows = []
        for impl in impls:
            if impl.needs_cuda and interpret:
                outcome = Outcome(impl.name, shape, skipped="needs a CUDA GPU (interpreter mode)")
            else:
                outcome = run_one(impl, shape, inputs, env, interpret)
            print_outcome(outcome)
            outcomes.append(outcome)
            if outcome.row is not None:
                rows.append(outcome.row)
        if rows:
            append_rows(path, rows)
        del inputs
        _REFERENCE_CACHE.clear()
        if not interpret:
            torch.cuda.empty_cache()
    return outcomes, path


def sm_scale_log2e(head_dim: int) -> float:
    """``sm_scale · log2(e)`` folded into Q's INT8 scale (quantization contract)."""
    return head_dim ** -0.5 * LOG2E
