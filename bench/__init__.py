"""Benchmarks of imagestreams: `python -m bench` (or `make bench`) prints a table and writes
`bench/results.json`. See docs/benchmarks.md for what each figure means and how to run it."""
