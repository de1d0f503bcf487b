"""Benchmarks (`make bench`): measured, not asserted; never part of `make test`."""
