"""Synthetic phantoms and cohorts with ground truth, for tests, demos and benchmarks (not runtime)."""
