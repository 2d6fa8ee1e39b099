"""Benchmark of the nightly audit on a large emulated tenant (see bench/README.md)."""
