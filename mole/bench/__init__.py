"""Benchmarks that wire the stages together over many runs: the generality matrix (DESIGN section 9)."""
