"""clipsql benchmarks: `python -m bench.suite` (see bench/suite.py)."""
