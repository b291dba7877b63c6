"""Benchmarks: `python benchmarks/bench_attention.py` (see benchmarks/common.py for the runner)."""
