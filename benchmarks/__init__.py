"""Performance measurements: each `bench_*.py` prints its figures and writes
`benchmarks/results/<name>.json`; `docs/BENCHMARKS.md` records method, machine and numbers."""
