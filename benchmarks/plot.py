"""Draw the familiar SageAttention speed chart from a results CSV.

One panel per (head dim, causal), sequence length on the x axis, one bar per implementation in
each group, TOPS on the y axis with the value printed on each bar (the layout of upstream's
``assets/*.png`` charts). For each (impl, shape) the latest measurement in the CSV is used, so
re-running part of the suite updates the chart.

Usage::

    python benchmarks/plot.py benchmarks/results/attention_nvidia-h100-80gb-hbm3.csv
    python benchmarks/plot.py RESULTS.csv --mode kernel --out kernel.png --gpu "NVIDIA H100 80GB HBM3"
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def load_latest(path: Path, mode: str, gpu: str | None) -> tuple[list[dict], str]:
    """Rows of ``mode`` for one GPU, keeping the latest row per (impl, batch, heads, L, D, causal).

    Returns ``(rows, gpu)``. ``gpu`` may be omitted when the CSV holds a single GPU.
    """
    with Path(path).open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("mode", "end2end") == mode and r.get("tops")]
    gpus = sorted({r["gpu"] for r in rows})
    if gpu is None:
        if len(gpus) != 1:
            raise ValueError(f"{path}: {len(gpus)} GPUs with {mode!r} rows ({gpus}); pick one with --gpu")
        gpu = gpus[0]
    elif gpu not in gpus:
        raise ValueError(f"{path}: no {mode!r} rows for GPU {gpu!r}; GPUs present: {gpus}")
    latest: dict = {}
    for r in rows:
        if r["gpu"] != gpu:
            continue
        key = (r["impl"], r["batch"], r["heads"], r["seqlen"], r["head_dim"], r["causal"])
        if key not in latest or r["timestamp"] >= latest[key]["timestamp"]:
            latest[key] = r
    return list(latest.values()), gpu


def _seqlen_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def plot(rows: list[dict], gpu: str, out: Path, mode: str = "end2end"):
    """Render the chart to ``out`` (PNG); returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no rows to plot")
    impls = list(dict.fromkeys(r["impl"] for r in rows))  # first-seen order = the run order
    head_dims = sorted({int(r["head_dim"]) for r in rows})
    causals = sorted({int(r["causal"]) for r in rows})
    fig, axes = plt.subplots(
        len(head_dims), len(causals), figsize=(7.5 * len(causals), 4.2 * len(head_dims)), squeeze=False
    )
    colors = plt.get_cmap("tab10").colors
    width = 0.8 / len(impls)
    for i, d in enumerate(head_dims):
        for j, c in enumerate(causals):
            ax = axes[i][j]
            panel = [r for r in rows if int(r["head_dim"]) == d and int(r["causal"]) == c]
            seqlens = sorted({int(r["seqlen"]) for r in panel})
            for k, impl in enumerate(impls):
                by_len = {int(r["seqlen"]): float(r["tops"]) for r in panel if r["impl"] == impl}
                xs = [x + (k - (len(impls) - 1) / 2) * width for x in range(len(seqlens))]
                ys = [by_len.get(n, 0.0) for n in seqlens]
                bars = ax.bar(xs, ys, width, label=impl, color=colors[k % len(colors)])
                for bar, n in zip(bars, seqlens):
                    if n in by_len:
                        ax.annotate(f"{by_len[n]:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                    ha="center", va="bottom", fontsize=6, rotation=90, xytext=(0, 2),
                                    textcoords="offset points")
            ax.set_xticks(range(len(seqlens)))
            ax.set_xticklabels([_seqlen_label(n) for n in seqlens])
            ax.set_xlabel("sequence length")
            ax.set_ylabel("TOPS")
            ax.set_title(f"head dim {d}, {'causal' if c else 'non-causal'}")
            ax.margins(y=0.15)
    any_row = rows[0]
    # Bars are the latest row of each (impl, shape), so a chart can mix runs of several trees.
    commits = sorted({r["commit"] for r in rows})
    commit = f"commit {commits[0]}" if len(commits) == 1 else f"{len(commits)} commits (latest run per bar, see the CSV)"
    what = {"end2end": "end to end (quantization included)", "kernel": "kernel only (pre-quantized inputs)"}.get(mode, mode)
    fig.suptitle(
        f"{gpu} | {what} | B={any_row['batch']} H={any_row['heads']} {any_row['dtype']} | "
        f"torch {any_row['torch']} CUDA {any_row['cuda']} | {commit}",
        fontsize=10,
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(impls), 5), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(impls) - 1) // 5), 1, 0.95))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="TOPS-vs-sequence-length chart from a bench_attention.py CSV")
    p.add_argument("csv", type=Path)
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: the CSV path with _<mode>.png)")
    p.add_argument("--mode", default="end2end", choices=("end2end", "kernel"))
    p.add_argument("--gpu", default=None, help="GPU name as in the CSV's gpu column (needed when it holds several)")
    args = p.parse_args(argv)
    try:
        rows, gpu = load_latest(args.csv, args.mode, args.gpu)
        out = args.out or args.csv.with_name(f"{args.csv.stem}_{args.mode}.png")
        plot(rows, gpu, out, args.mode)
    except (OSError, ValueError, KeyError) as exc:
        print(f"plot.py: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
