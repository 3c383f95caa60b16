"""Load generators and end-to-end benchmarks; `python -m load_tests` runs them and writes BENCHMARKS.md."""
