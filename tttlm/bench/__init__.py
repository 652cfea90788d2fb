"""Benchmarks: each prints a table and writes JSON records (speed claims are measured, never asserted)."""
