"""References, quantization emulations and error metrics used by tests and benchmarks."""
